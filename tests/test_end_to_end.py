"""Train -> predict on tiny data, in process, through the same run() functions as the scripts."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from helpers import (
    MULTI_VAE_TAGS,
    check_submission,
    compose_cfg,
    cpu_overrides,
    make_log,
    tensorboard_tags,
)
from lightrec.errors import LightrecError
from lightrec.runs import finished
from lightrec.runs.scoring import model_scorer, recommend_topk
from lightrec.serving import predict
from lightrec.training import fit as train
from lightrec.utils.path_utils import RunDir, get_directories, predict_checkpoint


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
    assert MULTI_VAE_TAGS <= tensorboard_tags(run_dir)
    maps = json.loads((run_dir / "id_maps.json").read_text())
    assert maps["item_ids"] == list(range(30))
    assert (run_dir / "config.yaml").is_file()


def test_predict_uses_the_latest_run_and_full_history(trained, tmp_path, tiny_csv):
    cfg, run_dir, _ = trained
    out = predict.run(cfg)
    assert out == run_dir / "submission.csv"
    check_submission(out, pd.read_csv(tiny_csv), k=10)


def test_predict_scores_from_the_checkpoint(trained, tmp_path, tiny_csv):
    """The submission is the reloaded checkpoint's top-10 over each user's full history."""
    cfg, run_dir, _ = trained
    sub = pd.read_csv(predict.run(cfg))
    run = RunDir(run_dir)
    model = finished.load_model(predict_checkpoint(cfg, run), finished.load_config(run))
    history = finished.load_history(cfg.data, list(range(30)))
    score = model_scorer(model.score_batch, history.collate("csr", 0), torch.device("cpu"))
    top = recommend_topk(score, len(history.users), 10, 64)
    assert sub.item.to_numpy().tolist() == top.ravel().tolist()


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
    cfg = compose_cfg(
        "multi_vae_v2",
        cpu_overrides(tmp_path, csv),
        tmp_path / "saved" / "hydra_logs" / "multi_vae_v2" / "d" / "t",
    )
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
