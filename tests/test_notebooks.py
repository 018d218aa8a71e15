"""The notebooks run top to bottom, headlessly, on a tiny trained run; viz functions behave."""

from __future__ import annotations

import importlib.util
import os

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from nbclient import NotebookClient

from helpers import ROOT, compose_cfg, cpu_overrides, make_log
from lightrec.analysis import viz
from lightrec.errors import LightrecError
from lightrec.training import fit as train

NOTEBOOKS = ROOT / "notebooks"

BERT_TINY = [
    "model.hidden_size=8",
    "model.max_len=12",
    "data.max_len=12",
    "model.num_heads=2",
    "trainer.min_epochs=1",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb")
    csv = tmp / "log.csv"
    make_log().to_csv(csv, index=False)
    out = {}
    for name, extra in (("multi_vae_v2", []), ("bert4rec_v2", BERT_TINY)):
        run_dir = tmp / "saved" / "hydra_logs" / name / "d" / "t"
        train.run(compose_cfg(name, cpu_overrides(tmp, csv) + extra, run_dir))
        out[name] = run_dir
    return out


def test_stored_notebooks_are_clean():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.parametrize(
    "name, model",
    [("visualize_multi_vae.ipynb", "multi_vae_v2"), ("visualize_bert4rec.ipynb", "bert4rec_v2")],
)
def test_notebook_runs_headlessly(runs, tmp_path, monkeypatch, name, model):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    monkeypatch.setenv("LIGHTREC_RUN_DIR", str(runs[model]))
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 3


def test_latest_run_is_the_default(runs):
    root = runs["multi_vae_v2"].parents[2]
    loaded = viz.load_run(None, "multi_vae_v2", root)
    assert loaded.path == runs["multi_vae_v2"]
    with pytest.raises(LightrecError, match="no finished training run of .bert4rec_v2."):
        viz.load_run(None, "bert4rec_v2", root / "elsewhere")


def test_latents_reconstruction_and_neighbours(runs):
    run = viz.load_run(runs["multi_vae_v2"])
    z = viz.latent_means(run)
    assert z.shape == (run.history.csr.shape[0], run.model.net.latent_dim)
    with torch.no_grad():  # the same mu as the network's own encoder in eval mode
        x = torch.from_numpy(run.history.csr[:3].toarray().astype(np.float32))
        assert np.allclose(z[:3], run.model.net.eval().encode(x)[0].numpy(), atol=1e-6)
    for method in ("pca", "tsne"):
        assert viz.project_2d(z, method).shape == (len(z), 2)
    rec = viz.reconstruction(run, 0, k=5)
    assert np.isclose(rec.prob.sum(), 1.0, atol=1e-4)
    assert sorted(rec.top_unseen[rec.top_unseen > 0]) == [1, 2, 3, 4, 5]
    assert (rec.input[rec.top_unseen > 0] == 0).all()  # recommendations are unseen
    first = rec.loc[rec.top_unseen == 1, "prob"].item()
    assert first == rec.prob[rec.input == 0].max()
    label = run.item_label(0)
    for weights in ("decoder", "encoder"):
        near = viz.item_neighbours(run, [label], k=4, weights=weights)[label]
        assert len(near) == 4 and label not in near
    # by hand: the cosine-nearest decoder row
    w = run.model.net.decoder[-1].weight.detach().numpy()
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    sims = w @ w[0]
    sims[0] = -np.inf
    assert viz.item_neighbours(run, [label], k=1)[label] == [run.item_label(int(sims.argmax()))]


def test_attention_for_user_and_curves(runs):
    run = viz.load_run(runs["bert4rec_v2"])
    maps, names = viz.attention_for_user(run, 0, last=6)
    layers, heads = run.cfg.model.num_layers, run.cfg.model.num_heads
    assert maps.shape == (layers, heads, len(names), len(names)) and names[-1] == "[MASK]"
    # rows cover every real position of the full sequence, so the shown part sums to <= 1
    assert (maps.sum(axis=-1) <= 1 + 1e-5).all()
    assert viz.mask_attention_by_position(maps).shape == (layers, heads, len(names))
    curves = viz.training_curves(run.path, ["train/loss"])
    assert len(curves) > 0 and set(curves.tag) == {"train/loss"}
    with pytest.raises(LightrecError, match="no scalar"):
        viz.training_curves(run.path, ["train/nothing"])


def test_kl_weight_curve_rises_to_the_cap(tmp_path):
    """What the rendered notebook shows: the logged KL weight is linear in the step, then flat."""
    csv = tmp_path / "log.csv"
    make_log().to_csv(csv, index=False)
    run_dir = tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / "t"
    ov = cpu_overrides(tmp_path, csv) + [
        "model.anneal_steps=6",
        "model.kl_cap=0.3",
        "trainer.max_epochs=5",
        "early_stopping.patience=50",
    ]
    train.run(compose_cfg("multi_vae_v2", ov, run_dir))
    c = viz.training_curves(run_dir, ["train/kl_weight"])
    w = dict(zip(c.step, c.value, strict=True))
    for step, value in w.items():
        assert np.isclose(value, min(0.3, 0.3 * step / 6), atol=1e-6), (step, value)
    assert os.path.isdir(run_dir / "tensorboard")


def test_matrix_factorization_notebook_runs_headlessly(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(60, 2)), rng.normal(size=(40, 2))
    u, i = np.nonzero(rng.random((60, 40)) < 0.5)
    rating = np.clip(np.round(3 + (p[u] * q[i]).sum(1)), 1, 5)
    csv = tmp_path / "ratings.csv"
    pd.DataFrame({"user": u, "item": i, "rating": rating}).to_csv(csv, index=False)
    monkeypatch.setenv("LIGHTREC_RATINGS_CSV", str(csv))
    monkeypatch.setenv("LIGHTREC_MAX_EPOCHS", "5")
    nb = nbformat.read(ROOT / "notebooks" / "matrix_factorization_basics.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "biased MF" in text and "I-AutoRec" in text and "test RMSE" in text


def test_stored_notebooks_are_what_the_builder_writes(tmp_path, monkeypatch):
    """The .ipynb files are generated from notebooks/build_notebooks.py: edit the builder."""
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", NOTEBOOKS / "build_notebooks.py"
    )
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    monkeypatch.setattr(builder, "HERE", tmp_path)
    for name, cells in builder.NOTEBOOKS.items():
        fresh = nbformat.read(builder.write(name, cells), as_version=4)
        stored = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert [c.source for c in fresh.cells] == [c.source for c in stored.cells], name


def test_the_competition_notebook_runs_from_python(tmp_path, monkeypatch):
    """Issue 42: hide, best, the member table, score and a new history's recommendations,
    all from Python, on MovieLens-100K (a quick plan of two closed forms)."""
    nb = nbformat.read(ROOT / "notebooks" / "competition_from_python.ipynb", as_version=4)
    monkeypatch.setenv("LIGHTREC_NB_MEMBERS", "[ease,item_knn]")
    monkeypatch.setenv("LIGHTREC_NB_OUT", str(tmp_path / "out"))
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {})) for o in outputs)
    assert "recall@10" in text and "marginal" in text
    assert list((tmp_path / "out" / "reranks").rglob("submission.csv"))
