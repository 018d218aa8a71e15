"""Train -> predict on tiny data, in process, through the same run() functions as the scripts."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_cfg, cpu_overrides, make_log
from lightrec import predict, train
from lightrec.errors import LightrecError
from lightrec.utils.path_utils import get_directories

TAGS = {"train/loss", "train/recon", "train/kl", "train/kl_weight", "val/recall@10",
        "val/ndcg@10"}  # fmt: skip


def tensorboard_tags(run_dir) -> set[str]:
    tags = set()
    for f in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        ea = EventAccumulator(str(f))
        ea.Reload()
        tags |= set(ea.Tags()["scalars"])
    return tags


def check_submission(path, log: pd.DataFrame, k: int) -> pd.DataFrame:
    sub = pd.read_csv(path)
    assert list(sub.columns) == ["user", "item"]
    assert set(sub.user) == set(log.user)
    assert (sub.groupby("user").size() == k).all()
    assert not sub.duplicated().any()
    seen = set(zip(log.user, log.item, strict=True))
    assert not any((u, i) in seen for u, i in zip(sub.user, sub.item, strict=True))
    assert set(sub.item) <= set(log.item)
    return sub


@pytest.fixture
def trained(tmp_path, tiny_csv):
    run_dir = tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / "t"
    cfg = compose_cfg("multi_vae_v2", cpu_overrides(tmp_path, tiny_csv), run_dir)
    score = train.run(cfg)
    return cfg, run_dir, score


def test_train_writes_a_complete_run_folder(trained):
    cfg, run_dir, score = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= score <= 1.0 and score == metrics["val"]["ndcg@10"]
    assert {"recall@10", "ndcg@10", "hit@10", "recall@20"} <= set(metrics["val"])
    assert "test" not in metrics  # holdout=valid
    assert metrics["epochs_trained"] == 3
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert state["hyper_parameters"]["num_items"] == 30
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert TAGS <= tensorboard_tags(run_dir)
    maps = json.loads((run_dir / "id_maps.json").read_text())
    assert maps["item_ids"] == list(range(30))
    assert (run_dir / "config.yaml").is_file()


def test_predict_uses_the_latest_run_and_full_history(trained, tmp_path, tiny_csv):
    cfg, run_dir, _ = trained
    out = predict.run(cfg)
    assert out == run_dir / "submission.csv"
    check_submission(out, pd.read_csv(tiny_csv), k=10)


def test_save_load_predict_gives_identical_scores(trained, tmp_path, tiny_csv):
    cfg, run_dir, _ = trained
    first = pd.read_csv(predict.run(cfg))
    second = pd.read_csv(predict.run(cfg))
    pd.testing.assert_frame_equal(first, second)


def test_same_seed_same_result(tmp_path, tiny_csv):
    scores = []
    for name in ("a", "b"):
        run_dir = tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / name
        cfg = compose_cfg("multi_vae_v2", cpu_overrides(tmp_path, tiny_csv), run_dir)
        scores.append(train.run(cfg))
    assert scores[0] == scores[1]


def test_valid_and_test_holdout_records_test_metrics(tmp_path, tiny_csv):
    run_dir = tmp_path / "run"
    overrides = [*cpu_overrides(tmp_path, tiny_csv), "data.holdout=valid_and_test"]
    train.run(compose_cfg("multi_vae", overrides, run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) == set(metrics["val"])


def test_split_none_trains_without_validation(tmp_path, tiny_csv):
    run_dir = tmp_path / "run"
    overrides = [*cpu_overrides(tmp_path, tiny_csv), "data.split_strategy=none"]
    assert train.run(compose_cfg("multi_vae_v2", overrides, run_dir)) is None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "val" not in metrics and metrics["best_epoch"] == 2  # the last epoch is kept


def test_string_ids_round_trip_to_the_submission(tmp_path):
    csv = tmp_path / "log.csv"
    log = make_log(string_ids=True)
    log.to_csv(csv, index=False)
    cfg = compose_cfg("multi_vae_v2", cpu_overrides(tmp_path, csv), tmp_path / "saved" /
                      "hydra_logs" / "multi_vae_v2" / "d" / "t")  # fmt: skip
    train.run(cfg)
    sub = check_submission(predict.run(cfg), log, k=10)
    assert sub.item.str.startswith("movie-").all()


def test_predict_without_a_run_lists_what_exists(tmp_path, tiny_csv):
    cfg = compose_cfg("multi_vae", cpu_overrides(tmp_path, tiny_csv))
    with pytest.raises(LightrecError, match="no finished training run of 'multi_vae'"):
        get_directories(cfg, "predict")


def test_predict_with_a_named_run_dir_missing_files(tmp_path, tiny_csv):
    cfg = compose_cfg("multi_vae", [*cpu_overrides(tmp_path, tiny_csv), f"run_dir={tmp_path}"])
    with pytest.raises(LightrecError, match="has no best.ckpt"):
        get_directories(cfg, "predict")
