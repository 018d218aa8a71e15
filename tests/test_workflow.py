"""lightrec from Python (issue 42): the command line's jobs, called in this process, with the
same results; errors raised, never an exit; several calls in one process."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import lightrec
from helpers import cpu_overrides, make_log, run_here, same_numbers


def _cli_metrics(tmp_path, argv) -> dict:
    p = run_here(argv, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    (path,) = (tmp_path / "cli").rglob("metrics.json")
    return json.loads(path.read_text())


def test_train_from_a_path_or_a_frame_is_the_command_lines_run(tmp_path, tiny_csv):
    base = [o for o in cpu_overrides(tmp_path, tiny_csv) if not o.startswith("data.path=")]
    base = [o for o in base if not o.startswith("paths.log_root=")]
    settings = ["trainer.max_epochs=2", "seed=3"]
    cli = _cli_metrics(
        tmp_path,
        [
            "train",
            "multi_vae_v2",
            f"data.path={tiny_csv}",
            *base,
            *settings,
            f"paths.log_root={tmp_path / 'cli'}",
        ],
    )
    from_path = lightrec.train(
        "multi_vae_v2",
        data=tiny_csv,
        overrides=[*base, f"paths.log_root={tmp_path / 'py'}"],
        trainer__max_epochs=2,
        seed=3,
    )
    frame = pd.read_csv(tiny_csv)
    from_frame = lightrec.train(
        "multi_vae_v2",
        data=frame,
        overrides=[*base, f"paths.log_root={tmp_path / 'df'}"],
        trainer={"max_epochs": 2},
        seed=3,
    )
    for run in (from_path, from_frame):
        assert run.path.is_dir() and run.metrics["best_epoch"] == cli["best_epoch"]
        same_numbers(cli, run.metrics)
        assert len(run.recommend(users=[str(frame["user"].iloc[0])], k=3)) == 3


def test_two_trainings_and_a_failed_one_in_one_process(tmp_path, tiny_csv):
    overrides = cpu_overrides(tmp_path, tiny_csv)
    first = lightrec.train("ease", overrides=overrides, tune=None)
    with pytest.raises(lightrec.LightrecError, match="model.lam=-1.0 must be"):
        lightrec.train("ease", overrides=overrides, model__lam=-1.0)
    with pytest.raises(lightrec.LightrecError, match="unknown config key model.nope"):
        lightrec.train("ease", overrides=[*overrides, "+model.nope=1"])
    second = lightrec.train("ease", overrides=overrides, model__lam=30.0, tune=None)
    assert first.path != second.path and second.cfg.model.lam == 30.0
    assert first.metrics["val"] and second.metrics["val"]


def test_best_from_python_is_the_command_lines_submission(tmp_path):
    csv = tmp_path / "log.csv"
    make_log(n_users=40).to_csv(csv, index=False)
    plan = ["best.members=[ease,item_knn]", "seed=5"]
    common = [o for o in cpu_overrides(tmp_path, csv) if not o.startswith("paths.")]
    p = run_here(
        [
            "best",
            *common,
            *plan,
            f"paths.log_root={tmp_path / 'cli'}",
            f"paths.blends={tmp_path / 'cli_blends'}",
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    cli = pd.read_csv(tmp_path / p.stdout.strip().splitlines()[-1], dtype=str)
    result = lightrec.best(
        "last_item",
        overrides=[
            *common,
            *plan,
            f"paths.log_root={tmp_path / 'py'}",
            f"paths.blends={tmp_path / 'py_blends'}",
        ],
    )
    assert result.path.is_file() and result.path.is_relative_to(tmp_path / "py_blends")
    pd.testing.assert_frame_equal(result.submission, cli)
    assert list(result.members["member"]) == ["ease", "item_knn"]
    assert {"seconds", "alone", "blend_without", "marginal"} <= set(result.members.columns)


def test_hide_and_score_agree_with_the_command_line(tmp_path, tiny_csv):
    train, hidden = lightrec.hide(tiny_csv, last_n=1, random_m=2, seed=4)
    p = run_here(
        [
            "submission",
            "hide",
            str(tiny_csv),
            str(tmp_path / "t.csv"),
            str(tmp_path / "h.csv"),
            "--n",
            "1",
            "--m",
            "2",
            "--seed",
            "4",
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    pd.testing.assert_frame_equal(
        hidden.reset_index(drop=True),
        pd.read_csv(tmp_path / "h.csv", dtype={"user": str, "item": str}),
        check_dtype=False,
    )
    sub = hidden.groupby("user").head(1)[["user", "item"]]
    sub.to_csv(tmp_path / "s.csv", index=False)
    p = run_here(
        ["submission", "score", str(tmp_path / "s.csv"), str(tmp_path / "h.csv")], tmp_path
    )
    assert json.loads(p.stdout.strip().splitlines()[-1]) == lightrec.score(sub, hidden)
    with pytest.raises(lightrec.LightrecError, match="has no column time"):
        lightrec.hide(pd.DataFrame({"user": [1], "item": [2]}))
