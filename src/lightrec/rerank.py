"""The second stage: re-rank the members' candidates with a GBDT ranker on side features.

``python -m lightrec rerank RUN_DIR RUN_DIR [...]`` or ``--latest ease recvae ...``:

1. The runs must share the data file, the split and the item map (as for ``blend``).
2. **Candidates**: for each user, the union of every member's top ``--candidates`` unseen
   items (z-scored per user, as the blend normalises).
3. **Features** of each (user, candidate): each member's z-score and rank and their mean;
   the item's popularity, all-time and over the latest 10% of rows (log counts); the user's
   activity (log of items) and how recent the user's last row is (its quantile among all
   rows); per categorical side field (genres, directors, writers; ``data.item_features``)
   the share of the user's history with the item's values and the share of the item's values
   the user has seen; per numeric field (year) the item's value, and its difference from
   the mean and the latest of the user's history.
4. **Training**, on validation only: the members' *selected* models score the validation
   users from their training rows; labels are the validation items. A LightGBM
   ``lambdarank`` ranker of small trees with users as groups, its tree count chosen by
   5-fold cross-validation over those users, then refit on all of them with that count.
5. **Submission**: the members' *refit* models (a run without one, and every run under
   ``--no-refit``: the selected one) score
   every user from the full data file; the ranker orders their candidates; top-k is written
   like every submission, with ``rerank.json`` (runs, features and their gain, trees, the
   cross-validated Recall@10 among the candidates of the ranker, of each member and of the
   mean z-score) and ``ranker.txt`` (LightGBM's text model) beside it.

``--available-only``: candidates whose release year (the numeric side field ``year`` or
``years``) is after the year of the user's last row are dropped (an item cannot be watched
before it exists). The ranker never sees a test or hidden item: labels come from the
validation rows, features from the training rows (tests/test_rerank.py proves it by
changing the test rows).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from lightrec import submission
from lightrec.blend import (
    MAX_USERS,
    Member,
    add_run_arguments,
    applied_models,
    chosen_runs,
    load_members,
    member_datamodule,
    normalise,
    output_path,
    ranks_of,
)
from lightrec.data.item_features import ItemFeatures, time_to_year
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.data.splits import TRAIN
from lightrec.errors import LightrecError
from lightrec.predict import load_history, load_model
from lightrec.recommend import Scorer, check_top_k, model_scorer
from lightrec.utils.device import compute_device
from lightrec.utils.io import atomic_write, write_json
from lightrec.utils.parallel import cores

log = logging.getLogger(__name__)

RECENT_SHARE = 0.1  # "recent" popularity: the latest tenth of the rows


@dataclass
class Context:
    """What the features of one stage are computed from (validation, or the submission)."""

    history: sp.csr_matrix  # users x items the members read (binary)
    scorers: list[Scorer]  # the members' scorers over the same user rows
    item_stats: dict[str, np.ndarray]  # per item, named
    user_stats: dict[str, np.ndarray]  # per user row, named
    user_year: np.ndarray  # per user row: year of the last row (NaN if times are not dates)
    side: ItemFeatures
    side_dense: dict[str, torch.Tensor]  # the categorical fields, dense once (items x values)


def context(
    history: sp.csr_matrix,
    scorers: list[Scorer],
    user: np.ndarray,
    item: np.ndarray,
    time: np.ndarray,
    side: ItemFeatures,
) -> Context:
    """A stage's context from its rows (user row, item index, time) and history matrix.
    Times enter as quantiles among the stage's rows (0: the earliest row, 1: the latest), so
    any clock works: when an item was consumed, when a user was active."""
    n_users, n_items = history.shape
    order = np.sort(time)
    q = (np.searchsorted(order, time, side="right") / max(len(order), 1)).astype(np.float64)
    recent = np.bincount(item[q > 1 - RECENT_SHARE], minlength=n_items)

    def mean_by(key: np.ndarray, n: int) -> np.ndarray:
        count = np.bincount(key, minlength=n)
        return np.where(count > 0, np.bincount(key, q, n) / np.maximum(count, 1), np.nan)

    def extreme_by(key: np.ndarray, n: int, first: bool) -> np.ndarray:
        out = np.full(n, np.inf if first else -np.inf)
        (np.minimum if first else np.maximum).at(out, key, q)
        out[np.isinf(out)] = np.nan
        return out

    last = np.full(n_users, time.min() if len(time) else 0, dtype=time.dtype)
    np.maximum.at(last, user, time)
    item_stats = {
        "pop_all": np.log1p(np.diff(history.tocsc().indptr)),
        "pop_recent": np.log1p(recent),
        "item_first_time": extreme_by(item, n_items, first=True),
        "item_mean_time": mean_by(item, n_items),
    }
    user_stats = {
        "user_items": np.log1p(np.diff(history.indptr)),
        "user_first_time": extreme_by(user, n_users, first=True),
        "user_mean_time": mean_by(user, n_users),
        "user_last_time": extreme_by(user, n_users, first=False),
    }
    as32 = {k: v.astype(np.float32) for k, v in {**item_stats, **user_stats}.items()}
    return Context(
        history,
        scorers,
        {k: as32[k] for k in item_stats},
        {k: as32[k] for k in user_stats},
        time_to_year(last),
        side,
        {name: torch.from_numpy(m.toarray()) for name, m in side.categorical.items()},
    )


# differences of an item's and a user's times: did the item exist, was it in use, while the
# user was active (an item first seen after the user's last row cannot be the user's)
TIME_GAPS = (
    ("item_first_time", "user_last_time"),
    ("item_mean_time", "user_mean_time"),
    ("item_mean_time", "user_first_time"),
)


def feature_names(n_members: int, ctx: Context) -> list[str]:
    names = [f"m{m}_{what}" for m in range(n_members) for what in ("z", "rank")]
    names += ["mean_z", *ctx.item_stats, *ctx.user_stats]
    names += [f"{a}_minus_{b}" for a, b in TIME_GAPS]
    for name in ctx.side.categorical:
        names += [f"{name}_share", f"{name}_seen"]
    for name in ctx.side.numeric:
        names += [name, f"{name}_minus_user_mean", f"{name}_minus_user_latest"]
    return names


def available(item_year: np.ndarray, user_year: np.ndarray) -> np.ndarray:
    """(users, items) mask of the items each user could have consumed: released in or before
    the year of the user's last row. An unknown year (NaN) keeps the item.

    >>> available(np.array([1990.0, 1998.0, np.nan]), np.array([1995.0, 2000.0])).tolist()
    [[True, False, True], [True, True, True]]
    """
    late = item_year[None, :] > user_year[:, None]  # NaN compares False
    return ~late


@torch.no_grad()
def candidate_batch(
    ctx: Context, rows: list[int], n_candidates: int, available_only: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For user ``rows``: ``(batch_pos, item, features, mean_z)`` of every candidate,
    grouped by user in the order of ``rows``, and the mean z-score matrix (B, I)."""
    zs, ranks = [], []
    mask = None
    seen = None
    for score in ctx.scorers:
        scores, seen = score(rows)
        z = normalise(scores.float().cpu(), seen.cpu(), "zscore")
        top = z.topk(n_candidates, dim=1).indices
        hit = torch.zeros_like(z, dtype=torch.bool).scatter_(1, top, True)
        mask = hit if mask is None else mask | hit
        zs.append(z)
        ranks.append(ranks_of(z).float())
    assert mask is not None and seen is not None
    x = torch.from_numpy(ctx.history[rows].toarray())
    mask &= x <= 0  # never a seen item (a member may rank one when all else is -inf)
    mean_z = torch.stack(zs).mean(dim=0)
    year = ctx.side.release_year() if available_only else None
    if year is not None:
        mask &= torch.from_numpy(available(year, ctx.user_year[rows]))
    b, i = mask.nonzero(as_tuple=True)
    cols = []
    for z, rank in zip(zs, ranks, strict=True):
        cols += [z[b, i], rank[b, i]]
    n_hist = x.sum(dim=1)
    item_stats = {k: torch.from_numpy(v)[i] for k, v in ctx.item_stats.items()}
    user_stats = {k: torch.from_numpy(v[rows])[b] for k, v in ctx.user_stats.items()}
    cols += [mean_z[b, i], *item_stats.values(), *user_stats.values()]
    cols += [item_stats[a] - user_stats[u] for a, u in TIME_GAPS]
    for f in ctx.side_dense.values():  # items x values
        counts = x @ f  # how many of the user's items have each value
        share = counts / n_hist.clamp(min=1)[:, None]
        per_item = f.sum(dim=1).clamp(min=1)
        cols.append(((share @ f.T)[b, i] / per_item[i]).float())
        cols.append((((counts > 0).float() @ f.T)[b, i] / per_item[i]).float())
    for values in ctx.side.numeric.values():
        v = torch.from_numpy(values).float()
        known = ~torch.isnan(v)
        vz = torch.where(known, v, 0.0)
        has = x * known.float()
        mean = (has @ vz) / has.sum(dim=1).clamp(min=1)
        latest = torch.where(has > 0, vz[None, :], -torch.inf).max(dim=1).values
        cols += [v[i], v[i] - mean[b], v[i] - latest[b]]
    feats = torch.stack([c.float() for c in cols], dim=1)
    feats[torch.isinf(feats)] = torch.nan  # LightGBM reads NaN as missing
    return b, i, feats, mean_z


def stage_data(
    ctx: Context,
    users: np.ndarray,
    n_candidates: int,
    available_only: bool,
    batch_size: int,
    targets: sp.csr_matrix | None = None,
) -> dict[str, Any]:
    """Candidates, features, (labels) and groups for ``users``, in batches."""
    parts: dict[str, list] = {"user": [], "item": [], "x": [], "y": [], "group": []}
    for start in range(0, len(users), batch_size):
        rows = [int(u) for u in users[start : start + batch_size]]
        b, i, feats, _ = candidate_batch(ctx, rows, n_candidates, available_only)
        row_of = np.asarray(rows)[b.numpy()]
        parts["user"].append(row_of)
        parts["item"].append(i.numpy())
        parts["x"].append(feats.numpy())
        parts["group"].append(np.bincount(b.numpy(), minlength=len(rows)))
        if targets is not None:
            parts["y"].append(targets[rows].toarray()[b.numpy(), i.numpy()] > 0)
    out = {k: np.concatenate(v) for k, v in parts.items() if v}
    return out


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
TREE_COUNTS = (25, 50, 100, 200, 300, 400, 600, 800)  # the candidates cross-validation picks from
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
    """Recall@k (hits / min(k, positives)) of ``scores`` over the candidates of ``part``,
    users with a positive candidate only (what the ranker can change)."""
    total, n = 0.0, 0
    start = 0
    for g in part["group"]:
        y = part["y"][start : start + g]
        s = scores[start : start + g]
        start += g
        if y.any():
            top = np.argsort(-s, kind="stable")[:k]
            total += y[top].sum() / min(k, y.sum())
            n += 1
    return round(total / max(n, 1), 6)


def validation_context(
    members: list[Member], device: torch.device, item_features: str | None
) -> tuple[Context, Any]:
    """The validation stage: the members' selected models on the training rows; the side
    information is ``item_features`` or the first member's ``data.item_features``."""
    first: RecSysDataModule | None = None
    scorers = []
    for m in members:
        dm = member_datamodule(m)
        first = first or dm
        if not dm.has_validation:
            raise LightrecError(f"run {m.run.root} has no validation split to train a ranker on")
        model = load_model(m.run.best_ckpt, m.cfg).to(device)
        scorers.append(model_scorer(model.score_batch, dm.scoring_collate("valid"), device))
    assert first is not None
    dm = first
    if item_features is not None:
        dm.item_features = item_features
    a = dm.arrays
    assert a is not None
    train = a["split"] == TRAIN
    ctx = context(
        dm.train_csr,
        scorers,
        a["user"][train],
        a["item"][train],
        a["time"][train],
        dm.side_features(),
    )
    return ctx, dm


def rerank(
    run_dirs: list[str],
    out: Path | None = None,
    n_candidates: int = 50,
    use_refit: bool = True,
    available_only: bool = False,
    max_users: int = MAX_USERS,
    batch_size: int = 256,
    top_k: int | None = None,
    seed: int = 0,
    item_features: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train the ranker on validation, apply it to the runs' refit models, write the
    submission; return its path and what ``rerank.json`` records."""
    out = output_path(out, "saved/reranks")
    if n_candidates < 1:
        raise LightrecError(f"--candidates {n_candidates} must be at least 1")
    if top_k is not None:
        check_top_k(top_k, sys.maxsize, "--top-k")  # before any run is read
    members = load_members(run_dirs)
    k = top_k if top_k is not None else int(members[0].cfg.predict.top_k)
    n_items = len(members[0].item_ids)
    check_top_k(k, n_items, "--top-k" if top_k is not None else "predict.top_k")
    n_candidates = min(n_candidates, n_items)
    device = compute_device(members[0].cfg.trainer.accelerator)

    ctx, dm = validation_context(members, device, item_features)
    if available_only and ctx.side.release_year() is None:
        raise LightrecError(
            "--available-only needs a numeric release-year side field, year or years "
            "(data.item_features: a years.tsv, or a year column)"
        )
    users = np.flatnonzero(np.diff(dm.valid_csr.indptr) > 0)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    data = stage_data(ctx, users, n_candidates, available_only, batch_size, dm.valid_csr)
    names = feature_names(len(members), ctx)
    compare = {"mean_z": names.index("mean_z")}
    compare.update({m.cfg.model_name: names.index(f"m{j}_z") for j, m in enumerate(members)})
    ranker, inner = fit_ranker(data, seed, compare)
    del data, ctx

    history = load_history(members[0].cfg.data, members[0].item_ids)
    scorers = []
    for m in members:
        model = load_model(m.run.submission_ckpt(use_refit), m.cfg).to(device)
        collate = history.collate(model.data_view, m.cfg.data.max_len)
        scorers.append(model_scorer(model.score_batch, collate, device))
    user, item, time = history.rows()
    apply_ctx = context(history.csr, scorers, user, item, time, dm.side_features())
    topk = apply_ranker(
        apply_ctx, ranker, len(history.users), n_candidates, available_only, k, batch_size
    )
    submission.write(out, history.users, members[0].item_ids, topk)
    model_text = ranker.model_to_string()

    def write_model(f: Any) -> None:
        f.write(model_text)

    atomic_write(out.parent / "ranker.txt", write_model)
    importance = ranker.feature_importance(importance_type="gain")
    record = {
        "runs": [str(m.run.root) for m in members],
        "models": applied_models(members, use_refit),
        "candidates_per_member": n_candidates,
        "available_only": available_only,
        "features": names,
        "gain": {n: round(float(g), 2) for n, g in zip(names, importance, strict=True)},
        "validation_users": int(len(users)),
        "cross_validated_recall@10": inner,
        "submission": str(out),
    }
    write_json(out.parent / "rerank.json", record)
    return out, record


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lightrec rerank",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(ap, "saved/reranks", "train the ranker on")
    ap.add_argument("--candidates", type=int, default=50, help="top items per member")
    ap.add_argument(
        "--available-only",
        action="store_true",
        help="drop items released after the user's last activity year",
    )
    ap.add_argument("--seed", type=int, default=0, help="the ranker's and the folds' seed")
    ap.add_argument(
        "--item-features",
        help="side information to use (default: the first run's data.item_features)",
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        runs = chosen_runs(a)
        path, record = rerank(
            runs,
            out=a.out,
            n_candidates=a.candidates,
            use_refit=not a.no_refit,
            available_only=a.available_only,
            max_users=a.max_users,
            top_k=a.top_k,
            seed=a.seed,
            item_features=a.item_features,
        )
    except LightrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    inner = record["cross_validated_recall@10"]
    others = ", ".join(f"{k} {v:.4f}" for k, v in inner.items() if k not in ("users", "trees"))
    print(f"ranker: {inner['trees']} trees; cross-validated Recall@10 among candidates: {others}")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
