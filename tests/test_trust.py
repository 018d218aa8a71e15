"""Untrusted input, round three (issue 33): a run folder builds nothing but lightrec's own
classes at any depth, through every entry that reads one; ids of any size; outputs created
as a plain ``open`` would create them and flushed before they are renamed; predict and
resume that say what changed in the data file; combiners that write where ``paths.*`` say."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import compose_cfg, cpu_overrides, make_log, run_here
from lightrec.runs import submission
from lightrec.training import fit as train

MEMBERS = ("ease", "item_knn")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two finished runs on one tiny log (kept pristine: tests copy them)."""
    tmp = tmp_path_factory.mktemp("trust")
    csv = tmp / "log.csv"
    make_log().to_csv(csv, index=False)
    runs = {}
    for config in MEMBERS:
        run_dir = tmp / "saved" / "hydra_logs" / config / "d" / "t"
        train.fit(compose_cfg(config, cpu_overrides(tmp, csv), run_dir))
        runs[config] = run_dir
    return csv, runs


def _hostile_copies(finished, tmp_path: Path, depth: int) -> tuple[list[Path], Path]:
    """Copies of the finished runs whose config.yaml carries a ``_target_`` that would make a
    folder if it were ever built: in ``data.columns.user`` (depth 1 below the block) or one
    level deeper (depth 2); and the folder's path."""
    _, runs = finished
    proof = tmp_path / "it-ran"
    hostile = {"_target_": "os.makedirs", "name": str(proof)}
    copies = []
    for config, run in runs.items():
        copy = tmp_path / "runs" / config
        shutil.copytree(run, copy)
        saved = yaml.safe_load((copy / "config.yaml").read_text())
        saved["data"]["columns"]["user"] = hostile if depth == 1 else {"inner": hostile}
        (copy / "config.yaml").write_text(yaml.safe_dump(saved))
        copies.append(copy)
    return copies, proof


ENTRIES = {
    "predict": lambda runs, out, csv: ["predict", "ease", f"run_dir={runs[0]}", f"data.path={csv}"],
    "blend": lambda runs, out, csv: ["blend", *map(str, runs), "--out", str(out)],
    "rerank": lambda runs, out, csv: ["rerank", *map(str, runs), "--out", str(out)],
    "recommend": lambda runs, out, csv: ["recommend", str(runs[0]), "--out", str(out)],
    "serve": lambda runs, out, csv: ["serve", str(runs[0]), "--port", "1"],
    "export": lambda runs, out, csv: ["export", str(runs[0]), "--out", str(out)],
    "resume": lambda runs, out, csv: ["train", "ease", f"resume={runs[0]}", f"data.path={csv}"],
}


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_a_nested_target_in_a_run_folder_builds_nothing(finished, tmp_path, entry, depth):
    csv, _ = finished
    runs, proof = _hostile_copies(finished, tmp_path, depth)
    if entry == "resume":
        (runs[0] / "metrics.json").unlink()  # an unfinished run, to be continued
    out = tmp_path / "out" / "result.csv"
    out.parent.mkdir()
    p = run_here(ENTRIES[entry](runs, out, csv), tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.columns.user" in errors[0], p.stderr[-2000:]
    assert not proof.exists()  # nothing named in the run folder was ever called
    assert not out.exists()


ALIAS_BOMB = "".join(
    [f"a0: &a0 [{', '.join(['x'] * 9)}]\n"]
    + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]\n" for n in range(1, 9)]
)  # 9^9 strings once expanded: hours and gigabytes where aliases are followed


def _edited_copies(finished, tmp_path: Path, edit: str) -> list[Path]:
    _, runs = finished
    copies = []
    for config, run in runs.items():
        copy = tmp_path / "runs" / config
        shutil.copytree(run, copy)
        text = (copy / "config.yaml").read_text()
        if edit == "env":
            text = text.replace("user: user", "user: ${oc.env:HOME}")
        elif edit == "create":
            text = text.replace("user: user", "user: '${oc.create:{_target_: os.getcwd}}'")
        else:
            text = ALIAS_BOMB + text
        (copy / "config.yaml").write_text(text)
        copies.append(copy)
    return copies


@pytest.mark.parametrize("edit", ["env", "create", "aliases"])
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_a_run_folder_with_interpolations_or_aliases_is_refused_at_once(
    finished, tmp_path, entry, edit
):
    """Issue 40.5-6: a finished run's config.yaml is written resolved and plain, so a ``${``
    (which would read the environment or build nodes) or a YAML alias (a few hundred bytes
    that expand to gigabytes) is refused in one sentence by every entry, before anything is
    built."""
    csv, _ = finished
    runs = _edited_copies(finished, tmp_path, edit)
    if entry == "resume":
        (runs[0] / "metrics.json").unlink()
    out = tmp_path / "out" / "result.csv"
    out.parent.mkdir()
    p = run_here(ENTRIES[entry](runs, out, csv), tmp_path)  # (an expanded bomb never ends)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    want = "anchors or aliases" if edit == "aliases" else "holds an interpolation"
    assert len(errors) == 1 and want in errors[0], p.stderr[-2000:]
    assert os.environ["HOME"] not in p.stderr  # the secret never printed
    assert not out.exists()


def test_ids_past_int64_are_text_written_back_byte_for_byte(tmp_path):
    log = make_log(n_users=30)
    big = {i: str(2**64 - 1 - i) for i in range(30)}  # uint64, past int64's 2**63 - 1
    log["item"] = log["item"].map(big)
    csv = tmp_path / "log.csv"
    log.to_csv(csv, index=False)
    run_dir = tmp_path / "saved" / "hydra_logs" / "ease" / "d" / "t"
    cfg = compose_cfg("ease", cpu_overrides(tmp_path, csv), run_dir)
    train.fit(cfg)
    p = run_here(["predict", "ease", *cpu_overrides(tmp_path, csv)], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    written = (run_dir / "submission.csv").read_text().splitlines()[1:]
    items = {line.split(",")[1] for line in written}
    assert items <= set(big.values()) and "-1" not in items
    sub = pd.read_csv(run_dir / "submission.csv", dtype=str)
    log_ = pd.read_csv(csv, dtype=str)
    assert set(sub.user) == set(log_.user) and (sub.groupby("user").size() == 10).all()
    seen = set(zip(log_.user, log_.item, strict=True))
    assert not [pair for pair in zip(sub.user, sub.item, strict=True) if pair in seen]


def test_outputs_are_created_as_open_would_and_flushed_before_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    before = os.umask(0o022)
    try:
        out = tmp_path / "submission.csv"
        submission.write(out, np.array(["u1", "u2"]), ["a", "b", "c"], np.array([[0], [2]]))
    finally:
        os.umask(before)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert synced == [False, True]  # the file, then its folder (the rename)
    assert out.read_text(encoding="utf-8").splitlines() == ["user,item", "u1,a", "u2,c"]


def test_config_yaml_is_written_whole_like_every_contract_file(tmp_path, tiny_csv, monkeypatch):
    written = []
    real = train.write_text

    def write_text(path, text):
        written.append(Path(path).name)
        return real(path, text)

    monkeypatch.setattr(train, "write_text", write_text)
    run_dir = tmp_path / "run"
    train.fit(compose_cfg("pop", cpu_overrides(tmp_path, tiny_csv), run_dir))
    assert written == ["config.yaml"]
    assert stat.S_IMODE((run_dir / "config.yaml").stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_predict_leaves_out_items_the_edited_file_no_longer_has(finished, tmp_path):
    csv, runs = finished
    copy = tmp_path / "ease"
    shutil.copytree(runs["ease"], copy)
    own = tmp_path / "own.csv"  # the run's own data file, edited after training
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    saved["data"]["path"] = str(own)
    (copy / "config.yaml").write_text(yaml.safe_dump(saved))
    edited = pd.read_csv(csv)
    gone = [0, 1, 2]
    edited[~edited["item"].isin(gone)].to_csv(own, index=False)
    p = run_here(["predict", "ease", f"run_dir={copy}"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "3 of the model's 30 items are not in the run's own data file" in p.stdout
    assert "left out of the recommendations" in p.stdout
    recommended = set(pd.read_csv(copy / "submission.csv")["item"])
    assert not recommended & set(gone)


def test_predict_on_a_file_of_new_users_ranks_the_whole_catalogue(finished, tmp_path):
    """Issue 40.14: another file's missing items are not the model's missing items: a new
    user who has seen 26 of the 30 items gets the 4 others, and items no user of the file
    has are still recommended."""
    _, runs = finished
    copy = tmp_path / "ease"
    shutil.copytree(runs["ease"], copy)
    new = pd.DataFrame(
        {"user": ["n1"] * 26 + ["n2"] * 3, "item": list(range(26)) + [0, 1, 2], "time": 1}
    )
    new.to_csv(tmp_path / "new.csv", index=False)
    argv = ["predict", "ease", f"run_dir={copy}", f"data.path={tmp_path / 'new.csv'}"]
    p = run_here([*argv, "predict.top_k=4", "data.min_interactions=1"], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "left out of the recommendations" not in p.stdout
    got = pd.read_csv(copy / "submission.csv")
    assert set(got[got["user"] == "n1"]["item"]) == {26, 27, 28, 29}
    assert set(got[got["user"] == "n2"]["item"]) & {26, 27, 28, 29}  # items n1 lacks too


def test_a_resume_after_the_data_changed_names_the_data_file(finished, tmp_path):
    csv, runs = finished
    copy = tmp_path / "ease"
    shutil.copytree(runs["ease"], copy)
    (copy / "metrics.json").unlink()
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    edited = pd.read_csv(csv)
    edited.loc[edited.index[:5], "item"] = 29  # same users and items, other rows
    edited.to_csv(csv, index=False)
    try:
        p = run_here(["train", "ease", f"resume={copy}", *_saved_overrides(saved)], tmp_path)
    finally:
        make_log().to_csv(csv, index=False)  # the module's runs read it again
    assert p.returncode == 2, p.stderr[-2000:]
    assert f"resume: the data file {csv} changed since {copy} started" in p.stderr


def _saved_overrides(saved: dict) -> list[str]:
    """The overrides that compose a run's own config again (its data, cache and roots)."""
    d = saved["data"]
    return [
        f"data.path={d['path']}",
        f"data.data_dir={d['data_dir']}",
        f"data_cache.cache_dir={saved['data_cache']['cache_dir']}",
        f"paths.log_root={saved['paths']['log_root']}",
        f"paths.predict_log_root={saved['paths']['predict_log_root']}",
        f"data.min_interactions={d['min_interactions']}",
        f"data.batch_size={d['batch_size']}",
        f"trainer.max_epochs={saved['trainer']['max_epochs']}",
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1",
    ]


def test_the_combiners_never_write_where_a_run_folder_says(finished, tmp_path):
    """Issue 40.5: output folders come from the command line or the shipped default, never
    from a run folder's config.yaml (someone else's folder could aim the write anywhere)."""
    _, runs = finished
    copies = []
    for config, run in runs.items():
        copy = tmp_path / "runs" / config
        shutil.copytree(run, copy)
        saved = yaml.safe_load((copy / "config.yaml").read_text())
        saved["paths"]["reranks"] = str(tmp_path / "mine" / "reranks")
        saved["paths"]["blends"] = str(tmp_path / "mine" / "blends")
        (copy / "config.yaml").write_text(yaml.safe_dump(saved))
        copies.append(str(copy))
    for tool in ("blend", "rerank"):
        p = run_here([tool, *copies], tmp_path)
        assert p.returncode == 0, p.stderr[-2000:]
        written = tmp_path / p.stdout.strip().splitlines()[-1]
        assert written.is_relative_to(tmp_path / "saved" / f"{tool}s") and written.is_file()
    assert not (tmp_path / "mine").exists()  # whatever the runs' paths.* said


def test_a_loaded_model_holds_one_copy_of_its_weights(finished, monkeypatch):
    """Predict's peak at ML-20M's shape was two copies of B (the model's own, then the
    checkpoint's copied in); the model is now built on the meta device and given the loaded
    tensors themselves."""
    import torch

    from lightrec.runs.finished import FinishedRun, load_model

    _, runs = finished
    run = FinishedRun.open(runs["ease"])
    state = torch.load(run.checkpoint(), map_location="cpu", weights_only=True)
    monkeypatch.setattr(torch, "load", lambda *args, **kw: state)
    model = load_model(run.checkpoint(), run.cfg)
    assert model.B.data_ptr() == state["state_dict"]["B"].data_ptr()  # the same memory
