"""End-to-end on the real MovieLens-100K (slow: marked, and still run in CI)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import ROOT, run_cmd
from lightrec.data.datasets import ML100K_SHAPE, movielens_100k
from test_end_to_end import TAGS, check_submission, tensorboard_tags

pytestmark = pytest.mark.slow
DATA_DIR = ROOT / "data"  # the README's data folder: prepared once, reused


def test_builtin_dataset_is_verified_and_keeps_titles():
    path = movielens_100k(DATA_DIR)
    log = pd.read_csv(path)
    assert list(log.columns) == ["user", "item", "time"]
    assert (len(log), log.user.nunique(), log.item.nunique()) == tuple(ML100K_SHAPE.values())
    items = pd.read_csv(path.parent / "items.csv")
    assert list(items.columns) == ["item", "title", "year", "genres"]
    assert items.set_index("item").loc[1, "title"] == "Toy Story"


def test_run_script_clean_both_on_movielens(tmp_path):
    proc = run_cmd(
        [str(ROOT / "run_multi_vae.sh"), "clean-both", "multi_vae_v2",
         f"data.data_dir={DATA_DIR}", f"data_cache.cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics_path,) = (tmp_path / "saved" / "hydra_logs" / "multi_vae_v2").rglob("metrics.json")
    run_dir = metrics_path.parent
    metrics = json.loads(metrics_path.read_text())
    assert metrics["data"]["rows"] == 100_000
    assert metrics["val"]["recall@10"] > 0.08  # far above random (10 / 1682)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert state["hyper_parameters"]["hidden_dims"] == [600, 200]
    assert TAGS <= tensorboard_tags(run_dir)
    sub = check_submission(
        run_dir / "submission.csv", pd.read_csv(DATA_DIR / "ml-100k" / "interactions.csv"), k=10
    )
    assert len(sub) == 943 * 10
