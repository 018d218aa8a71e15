"""The search harness: `train_<model>.py -m hparams_search=<file>` with Hydra's Optuna
sweeper, end to end on tiny data; it maximises validation, never a test metric."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from helpers import CONFIG_DIR, ROOT, compose_cfg, run_cmd

SEARCHES = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_file_composes_with_its_model(search):
    model_config = {"multi_vae": "multi_vae_v2", "bert4rec": "bert4rec_v2"}.get(search, search)
    cfg = compose_cfg(model_config, [f"hparams_search={search}"])
    assert cfg.refit is False  # trials are judged on validation; no refit to pay for
    assert cfg.checkpoint.mode == "max"  # the sweeper maximises


def test_search_runs_end_to_end_and_selects_on_validation(tmp_path, tiny_csv):
    log_root = tmp_path / "saved"
    p = run_cmd(
        [
            sys.executable,
            str(ROOT / "train_multi_vae.py"),
            "-m",
            "hparams_search=multi_vae",
            "hydra.sweeper.n_trials=3",
            f"data.path={tiny_csv}",
            "data.holdout=valid_and_test",
            "data.min_interactions=3",
            f"data_cache.cache_dir={tmp_path / 'cache'}",
            f"paths.log_root={log_root}",
            "trainer.max_epochs=2",
            "trainer.accelerator=cpu",
        ],
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    (results,) = log_root.rglob("optimization_results.yaml")
    best = yaml.safe_load(results.read_text())
    trials = [json.loads(m.read_text()) for m in results.parent.rglob("metrics.json")]
    assert len(trials) == 3 and all("refit" not in t for t in trials)
    val = [t["val"]["ndcg@10"] for t in trials]
    assert best["best_value"] == pytest.approx(max(val))  # the best validation value
    assert set(best["best_params"]) == {
        "data.batch_size",
        "model.hidden_dims",
        "model.dropout",
        "model.kl_cap",
        "model.anneal_steps",
        "model.lr",
    }
