"""EASE and Popularity: closed form, memory guard, the competition split, no leakage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from helpers import build_model, compose_cfg, cpu_overrides
from lightrec import predict, train
from lightrec.data.splits import TEST, TRAIN, VALID, competition_split, last_n_random_m
from lightrec.errors import LightrecError


def test_closed_form_equals_least_squares_with_zero_diagonal():
    rng = np.random.default_rng(0)
    X = (rng.random((60, 12)) < 0.3).astype(np.float64)
    lam = 2.5
    model = build_model("ease", num_items=12, lam=lam, dtype="float64")
    model.fit_closed_form(sp.csr_matrix(X))
    B = model.B.double().numpy()
    assert np.allclose(np.diag(B), 0.0)
    for j in range(12):  # ridge regression of item j on every other item
        others = [i for i in range(12) if i != j]
        A = X[:, others]
        b = np.linalg.solve(A.T @ A + lam * np.eye(11), A.T @ X[:, j])
        assert np.allclose(B[others, j], b, atol=1e-5)


def test_float32_and_float64_agree():
    X = sp.random(200, 40, density=0.2, random_state=1, format="csr")
    a = build_model("ease", num_items=40, lam=10.0, dtype="float32")
    b = build_model("ease", num_items=40, lam=10.0, dtype="float64")
    a.fit_closed_form(X)
    b.fit_closed_form(X)
    assert torch.allclose(a.B, b.B, atol=1e-4)


def test_memory_guard_stops_before_allocating():
    model = build_model("ease", num_items=100_000)  # float64 on the CPU: 160 GB
    with pytest.raises(
        LightrecError, match=r"100,000 items needs about 160\.0 GB .*free on the CPU"
    ):
        model.fit_closed_form(sp.csr_matrix((10, 100_000), dtype=np.float32))
    assert model.B.numel() == 0  # nothing was allocated


def test_the_budget_key_is_an_optional_cap():
    model = build_model("ease", num_items=2_000, memory_budget_gb=0.01)
    with pytest.raises(LightrecError, match=r"over model.memory_budget_gb=0.01"):
        model.fit_closed_form(sp.csr_matrix((10, 2_000), dtype=np.float32))


def test_a_27k_item_catalogue_fits_an_80_gb_gpu(monkeypatch):
    """MovieLens-20M's 26,744 items in float32 need 5.7 GB: the guard asks the GPU what is
    free (the old guard assumed float64 and a fixed 8 GB budget, and refused)."""
    from lightrec.models import item_item

    monkeypatch.setattr(item_item, "available_bytes", lambda device: 80 * 10**9)
    model = build_model("ease", num_items=26_744)
    model.check_fit_memory(torch.device("cuda"), torch.float32)  # no error
    monkeypatch.setattr(item_item, "available_bytes", lambda device: 4 * 10**9)
    with pytest.raises(LightrecError, match="5.7 GB .* over 4.0 GB free on the CUDA"):
        model.check_fit_memory(torch.device("cuda"), torch.float32)


def test_popularity_ranks_by_training_users():
    X = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 1, 0, 0]], dtype=np.float32))
    pop = build_model("pop", num_items=4)
    pop.fit_closed_form(X)
    assert pop.counts.tolist() == [1.0, 3.0, 0.0, 1.0]


def test_last_n_random_m_by_hand():
    user = np.array([0] * 8 + [1] * 2)
    mask = last_n_random_m(user, n=2, m=3, seed=0)
    assert mask[6:8].all() and mask[:6].sum() == 3  # last 2 + 3 of the 6 earlier
    assert mask[8:].tolist() == [False, True]  # user 1 keeps one row
    assert np.array_equal(mask, last_n_random_m(user, n=2, m=3, seed=0))
    split = competition_split(user, "valid_and_test", n=1, m=1, seed=0)
    assert (split[:8] == TEST).sum() == 2 and (split[:8] == VALID).sum() == 2
    assert split[7] == TEST and (split[:8] == TRAIN).sum() == 4


def test_ease_run_and_predict(tmp_path, tiny_csv):
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    overrides = [*cpu_overrides(tmp_path, tiny_csv), "data.holdout=valid_and_test"]
    cfg = compose_cfg("ease", overrides, run_dir)
    score = train.run(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert score == metrics["val"]["ndcg@10"]
    for part in ("val", "test"):
        assert {f"{m}@{k}" for m in ("recall", "ndcg", "hit", "coverage") for k in (10, 20)} <= set(
            metrics[part]
        )
    assert metrics["fit_time_s"] > 0
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert state["state_dict"]["B"].shape == (30, 30)
    sub = pd.read_csv(predict.run(cfg))
    assert (sub.groupby("user").size() == 10).all()


def test_competition_split_through_the_data_module(tmp_path, tiny_csv):
    run_dir = tmp_path / "run"
    overrides = [
        *cpu_overrides(tmp_path, tiny_csv),
        "data.split_strategy=last_n_random_m",
        "data.last_n=1",
        "data.random_m=2",
    ]
    train.run(compose_cfg("pop", overrides, run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["valid"] == 40 * 3  # 3 held-out items for each of 40 users


def _swap_test_items(csv, out):
    """The same log with every user's last (test) item replaced by another item."""
    log = pd.read_csv(csv)
    last = log.sort_values(["user", "time"]).groupby("user").tail(1).index
    log.loc[last, "item"] = (log.loc[last, "item"] + 15) % 30
    log = log.drop_duplicates(["user", "item"], keep="last")
    log.to_csv(out, index=False)
    return out


@pytest.mark.parametrize("config", ["multi_vae_v2", "ease"])
def test_test_items_never_influence_model_selection(tmp_path, tiny_csv, config):
    """Swap every test item for another: everything selected on validation must stay
    identical (epochs, weights, validation metrics); only test metrics may change."""
    results = []
    for name, csv in (("a", tiny_csv), ("b", _swap_test_items(tiny_csv, tmp_path / "b.csv"))):
        run_dir = tmp_path / name
        ov = [
            *cpu_overrides(tmp_path, csv),
            "data.holdout=valid_and_test",
            "trainer.max_epochs=4",
            "data.min_interactions=1",
            "data_cache.use_cache=false",
        ]
        score = train.run(compose_cfg(config, ov, run_dir))
        state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        results.append((score, state, metrics))
    (sa, wa, ma), (sb, wb, mb) = results
    assert sa == sb and ma["val"] == mb["val"] and ma["best_epoch"] == mb["best_epoch"]
    for k in wa["state_dict"]:
        assert torch.equal(wa["state_dict"][k], wb["state_dict"][k]), k
    assert ma["test"] != mb["test"]  # the swap did change what test sees


def test_the_gpu_gram_by_row_blocks_is_exactly_scipys():
    """The GPU fit's X^T X (dense products of user blocks, run here on the CPU) is the exact
    co-occurrence count matrix, whatever the block size."""
    from lightrec.models.ease import gram_by_row_blocks

    rng = np.random.default_rng(0)
    x = sp.random(103, 37, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    x.data[:] = 1.0
    want = (x.T @ x).toarray()
    for rows in (1, 10, 103, None):
        got = gram_by_row_blocks(x, torch.device("cpu"), rows=rows)
        assert np.array_equal(got.numpy(), want), rows
