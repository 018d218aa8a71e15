"""The re-ranker's model: a LightGBM ``lambdarank`` ranker of small trees over the candidates,
users as groups, its tree count chosen by cross-validation over the validation users; and
its order applied to a stage's candidates."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lightrec.combine.features import Context, candidate_batch
from lightrec.errors import LightrecError
from lightrec.metrics import grouped_recall
from lightrec.utils.parallel import cores

RANKER_PARAMS = {  # small trees: validation holds one group per user, a few positives each
    "objective": "lambdarank",
    "learning_rate": 0.03,
    "num_leaves": 7,
    "min_data_in_leaf": 50,
    "lambda_l2": 1.0,
    "feature_fraction": 0.8,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


TREE_COUNTS = (25, 50, 100, 200, 300, 400, 600, 800)  # the counts cross-validation picks from
FOLDS = 5


def _train(part: dict[str, Any], trees: int, seed: int) -> Any:
    import lightgbm as lgb

    params = {**RANKER_PARAMS, "seed": seed, "num_threads": cores()}
    data = lgb.Dataset(part["x"], part["y"].astype(int), group=part["group"])
    return lgb.train(params, data, num_boost_round=trees)


def _subset(data: dict[str, Any], users: np.ndarray) -> dict[str, Any]:
    """The candidates of ``users`` (groups stay whole and in order)."""
    keep = np.isin(data["user"], users)
    groups = data["group"][data["group"] > 0]
    group_users = data["user"][np.cumsum(groups) - groups]
    return {
        "x": data["x"][keep],
        "y": data["y"][keep],
        "group": groups[np.isin(group_users, users)],
        "user": data["user"][keep],
        "item": data["item"][keep],
    }


def fit_ranker(data: dict[str, Any], seed: int, compare: dict[str, int]) -> tuple[Any, dict]:
    """A lambdarank ranker on validation candidates, its tree count chosen by 5-fold
    cross-validation over the users, then refit on all of them; and the cross-validated
    Recall@10 among the candidates of the ranker at that count and of the feature columns
    ``compare`` names (each member's z-score, their mean), on the same folds."""
    users = np.unique(data["user"])
    folds = np.array_split(np.random.default_rng(seed).permutation(users), FOLDS)
    found: dict[str, list[float]] = {str(n): [] for n in TREE_COUNTS}
    found.update({name: [] for name in compare})
    for fold in folds:
        held = _subset(data, np.sort(fold))
        booster = _train(_subset(data, np.setdiff1d(users, fold)), max(TREE_COUNTS), seed)
        for n in TREE_COUNTS:
            found[str(n)].append(recall_at(held, booster.predict(held["x"], num_iteration=n), 10))
        for name, col in compare.items():
            found[name].append(recall_at(held, held["x"][:, col], 10))
    means = {name: round(float(np.mean(v)), 6) for name, v in found.items()}
    trees = max(TREE_COUNTS, key=lambda n: (means[str(n)], -n))
    check = {
        "users": len(users),
        "trees": trees,
        "ranker": means[str(trees)],
        **{name: means[name] for name in compare},
    }
    return _train(data, trees, seed), check


def recall_at(part: dict[str, Any], scores: np.ndarray, k: int) -> float:
    """Recall@k of ``scores`` among the candidates of ``part`` (:func:`grouped_recall`)."""
    return grouped_recall(part["y"], scores, part["group"], k)


def apply_ranker(
    ctx: Context,
    ranker: Any,
    n_users: int,
    n_candidates: int,
    available_only: bool,
    k: int,
    batch_size: int,
) -> np.ndarray:
    """Top-k of every user: candidates in the ranker's order, then (if a user has fewer than
    k candidates) the other unseen items by mean z-score."""
    out = np.empty((n_users, k), dtype=np.int64)
    for start in range(0, n_users, batch_size):
        rows = list(range(start, min(start + batch_size, n_users)))
        b, i, feats, mean_z = candidate_batch(ctx, rows, n_candidates, available_only)
        scores = mean_z.clone() - 1e6  # not a candidate: after every candidate
        if len(b):
            scores[b, i] = torch.from_numpy(ranker.predict(feats.numpy())).float()
        scores[torch.from_numpy(ctx.history[rows].toarray()) > 0] = -torch.inf
        top = scores.topk(k, dim=1)
        if torch.isinf(top.values).any():
            raise LightrecError(f"a user has fewer than {k} unseen items")
        out[start : start + len(rows)] = top.indices.numpy()
    return out
