"""End-to-end on the real MovieLens-100K (slow: marked, and still run in CI)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import MULTI_VAE_TAGS, ROOT, check_submission, compose_cfg, run_cmd, tensorboard_tags
from lightrec.data.datasets import ML100K_SHAPE, movielens_100k
from lightrec.training import fit as train

pytestmark = pytest.mark.slow
DATA_DIR = ROOT / "data"  # the README's data folder: prepared once, reused


def test_builtin_dataset_is_verified_and_keeps_titles():
    path = movielens_100k(DATA_DIR)
    log = pd.read_csv(path)
    assert list(log.columns) == ["user", "item", "time", "rating"]
    assert set(log.rating) == {1, 2, 3, 4, 5}
    assert (len(log), log.user.nunique(), log.item.nunique()) == tuple(ML100K_SHAPE.values())
    items = pd.read_csv(path.parent / "items.csv")
    assert list(items.columns) == ["item", "title", "year", "genres"]
    assert items.set_index("item").loc[1, "title"] == "Toy Story"


def test_run_script_clean_both_on_movielens(tmp_path):
    proc = run_cmd(
        [
            str(ROOT / "run_multi_vae.sh"),
            "clean-both",
            "multi_vae_v2",
            f"data.data_dir={DATA_DIR}",
            f"data_cache.cache_dir={tmp_path / 'cache'}",
            "trainer.max_epochs=20",  # well past 0.08; early stopping comes at 56-70
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics_path,) = (tmp_path / "saved" / "hydra_logs" / "multi_vae_v2").rglob("metrics.json")
    run_dir = metrics_path.parent
    metrics = json.loads(metrics_path.read_text())
    assert metrics["data"]["rows"] == 100_000
    assert metrics["val"]["recall@10"] > 0.08  # far above random (10 / 1682)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert state["hyper_parameters"]["hidden_dims"] == [600, 200]
    assert MULTI_VAE_TAGS <= tensorboard_tags(run_dir)
    sub = check_submission(
        run_dir / "submission.csv", pd.read_csv(DATA_DIR / "ml-100k" / "interactions.csv"), k=10
    )
    assert len(sub) == 943 * 10


def _numpy_ease_protocol(log: pd.DataFrame, lams: list[float]) -> tuple[float, dict[str, float]]:
    """An independent computation of the leave-one-out protocol: test = each user's last
    item, validation = second-to-last (ties in file order), lambda chosen on validation
    NDCG@10, test scored with the validation item added to the history."""
    log = log.reset_index(drop=True)
    log["row"] = np.arange(len(log))
    log = log.sort_values(["user", "time", "row"])
    from_end = log.groupby("user").cumcount(ascending=False).to_numpy()
    users, u = np.unique(log.user, return_inverse=True)
    items, i = np.unique(log.item, return_inverse=True)

    def matrix(mask):
        m = np.zeros((len(users), len(items)))
        m[u[mask], i[mask]] = 1.0
        return m

    train, valid, test = matrix(from_end >= 2), matrix(from_end == 1), matrix(from_end == 0)

    def ease(lam):
        g = train.T @ train + lam * np.eye(len(items))
        p = np.linalg.inv(g)
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0.0)
        return b

    def evaluate(history, target, b, k=10):
        s = history @ b
        s[history > 0] = -np.inf
        top = np.argsort(-s, axis=1)[:, :k]
        hits = np.take_along_axis(target, top, axis=1)
        n = target.sum(1)
        rec = hits.sum(1) / np.minimum(n, k)
        idcg = np.array([np.sum(1 / np.log2(np.arange(2, min(m, k) + 2))) for m in n])
        ndcg = (hits / np.log2(np.arange(2, k + 2))).sum(1) / idcg
        return {"recall@10": rec.mean(), "ndcg@10": ndcg.mean()}

    best = max(lams, key=lambda lam: evaluate(train, valid, ease(lam))["ndcg@10"])
    return best, evaluate(train + valid, test, ease(best))


def test_ease_matches_an_independent_computation(tmp_path):
    lams = [50.0, 100.0, 300.0, 1000.0]
    csv = movielens_100k(DATA_DIR)
    runs = {}
    for lam in lams:
        run_dir = tmp_path / f"lam{lam}"
        overrides = [
            f"data.path={csv}",
            "data.holdout=valid_and_test",
            f"model.lam={lam}",
            f"data_cache.cache_dir={tmp_path / 'cache'}",
            "data.min_interactions=1",
        ]
        runs[lam] = (train.run(compose_cfg("ease", overrides, run_dir)), run_dir)
    chosen = max(lams, key=lambda lam: runs[lam][0])  # by validation NDCG@10 only
    ours = json.loads((runs[chosen][1] / "metrics.json").read_text())["test"]
    ref_lam, ref = _numpy_ease_protocol(pd.read_csv(csv), lams)
    assert chosen == ref_lam
    assert abs(ours["recall@10"] - ref["recall@10"]) < 0.005
    assert abs(ours["ndcg@10"] - ref["ndcg@10"]) < 0.005
