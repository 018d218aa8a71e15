"""The re-ranker's model, and the check that it earns its place.

The validation users are split once (seeded): a fifth are **held back**, and nothing that
chooses sees them. On the rest, a LightGBM ``lambdarank`` ranker of small trees (users as
groups) learns with early stopping on an inner fifth (NDCG@10, LightGBM's own), which
chooses the tree count; the blend it competes with, each member's z-score weighted, has its
weights chosen on the same users. Both are then scored once on the held-back users
(Recall@10 among the candidates): the ranker is applied only where it beats the blend
there; otherwise the submission is the blend. Last, the chosen one is refit on every
validation user (the ranker with its tree count, the blend's weights chosen again).

Three LightGBM fits in all, the first cut short by early stopping (the previous 5-fold
choice over 8 tree counts fit five rankers of 800 trees).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lightrec.combine.features import Context, candidate_batch
from lightrec.combine.weights import Without, choose_weights
from lightrec.errors import LightrecError
from lightrec.metrics import grouped_recall
from lightrec.runs.scoring import best_first
from lightrec.utils.parallel import cores

RANKER_PARAMS = {  # small trees: validation holds one group per user, a few positives each
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [10],
    "learning_rate": 0.03,
    "num_leaves": 7,
    "min_data_in_leaf": 50,
    "lambda_l2": 1.0,
    "feature_fraction": 0.8,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
MAX_TREES = 1000  # early stopping ends it long before, on these small problems
PATIENCE = 50  # rounds without a better inner NDCG@10 before the trees stop
HELD_BACK = 0.2  # validation users nothing chooses on: the ranker's gain is measured there
INNER = 0.2  # of the rest: the users whose NDCG@10 stops the trees
MIN_USERS = 10  # validation users (with a candidate) a ranker is trained on, at least
MIN_HELD_BACK = 30  # held-back users that may choose the ranker or a member over the blend


@dataclass
class CandidateBlend:
    """The blend on candidates: each member's z-score column weighted (``predict`` as a
    LightGBM booster's, so that it orders candidates the same way)."""

    weights: np.ndarray
    columns: list[int]

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = np.nan_to_num(x[:, self.columns].astype(np.float64), nan=-1e9)
        return z @ self.weights


class PackedCandidates:
    """A stage's candidates packed per user (users x their most candidates, padding at
    -inf), so that a weighting's Recall@10 among them costs one partition, not a sort: what
    the blend's weight search evaluates hundreds of times."""

    def __init__(self, part: dict[str, Any], columns: list[int], k: int = 10) -> None:
        groups = part["group"]
        n, width = len(groups), int(groups.max()) if len(groups) else 1
        row = np.repeat(np.arange(n), groups)
        col = np.arange(len(row)) - np.repeat(np.cumsum(groups) - groups, groups)
        self.parts = []  # one (users, width) matrix per member
        for c in columns:
            m = np.full((n, width), -np.inf, dtype=np.float32)
            m[row, col] = np.nan_to_num(part["x"][:, c], nan=-np.inf)
            self.parts.append(m)
        self.labels = np.zeros((n, width), dtype=bool)
        self.labels[row, col] = part["y"]
        positives = self.labels.sum(axis=1)
        self.has = positives > 0
        self.cap = np.minimum(k, positives)
        self.k = min(k, width)

    def __call__(self, weights: np.ndarray) -> float:
        total = sum(float(w) * p for w, p in zip(weights, self.parts, strict=True) if w > 0)
        assert isinstance(total, np.ndarray)
        total = np.nan_to_num(total, nan=-np.inf)  # 0 * -inf padding
        top = np.argpartition(-total, self.k - 1, axis=1)[:, : self.k]
        hits = np.take_along_axis(self.labels, top, axis=1).sum(axis=1)
        return float(np.mean(hits[self.has] / self.cap[self.has])) if self.has.any() else 0.0


def _train(part: dict[str, Any], seed: int, trees: int, valid: dict[str, Any] | None = None) -> Any:
    import lightgbm as lgb

    params = {**RANKER_PARAMS, "seed": seed, "num_threads": cores()}
    data = lgb.Dataset(part["x"], part["y"].astype(int), group=part["group"])
    if valid is None:
        return lgb.train(params, data, num_boost_round=trees)
    check = lgb.Dataset(valid["x"], valid["y"].astype(int), group=valid["group"], reference=data)
    stop = lgb.early_stopping(PATIENCE, first_metric_only=True, verbose=False)
    return lgb.train(params, data, num_boost_round=trees, valid_sets=[check], callbacks=[stop])


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


def _blend(part: dict[str, Any], columns: list[int], left_out: int | None = None) -> CandidateBlend:
    """The members' z-scores weighted to maximise Recall@10 among ``part``'s candidates
    (without the member at ``left_out``, when given: its weight 0)."""
    search: Any = PackedCandidates(part, columns)
    if left_out is None:
        weights, _ = choose_weights(search)
        return CandidateBlend(np.asarray(weights, dtype=np.float64), columns)
    without = Without(search, left_out)
    weights, _ = choose_weights(without)
    return CandidateBlend(without.full(weights), columns)


def split_held_back(users: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The validation users nothing chooses on (a seeded fifth, sorted) and the rest (in
    the seeded order, which the inner split follows)."""
    shuffled = np.random.default_rng(seed).permutation(np.unique(users))
    n_held = round(HELD_BACK * len(shuffled))
    return np.sort(shuffled[:n_held]), shuffled[n_held:]


def fit_ranker(
    data: dict[str, Any], seed: int, members: dict[str, int], users: np.ndarray | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """The ranker (trained on every validation user with the tree count early stopping
    chose), what the submission applies, and the record.

    Three contenders are scored once on the held-back users (Recall@10 among the
    candidates): the ranker, the blend of the members' z-scores (weights chosen on the
    rest) and the best single member (the one best on the rest). The submission applies
    the ranker only where it beats both; else the blend where it is at least the member;
    else that member alone. The record holds the users of each part, the trees, every
    held-back score (the ranker, the blend, their mean z-score and each member:
    ``members`` maps a unique name to its z-score column, and ``mean_z``), the margins,
    and each member's value: the held-back Recall@10 of the blend without it (its weights
    chosen again on the rest) against the blend's. ``users``: the validation users the
    split is drawn from (by default those with a candidate)."""
    users = np.unique(data["user"] if users is None else users)
    if len(users) < MIN_USERS:
        raise LightrecError(
            f"{len(users)} validation users are too few for the ranker (at least {MIN_USERS}: "
            "a fifth are held back, a fifth stop its trees): use best.combine=blend"
        )
    held, rest = split_held_back(users, seed)
    n_inner = round(INNER * len(rest))
    inner, fit = np.sort(rest[:n_inner]), np.sort(rest[n_inner:])
    rest = np.sort(rest)
    stopped = _train(_subset(data, fit), seed, MAX_TREES, _subset(data, inner))
    trees = max(1, int(stopped.best_iteration or stopped.current_iteration()))
    named = {name: c for name, c in members.items() if name != "mean_z"}
    columns = list(named.values())

    rest_part, held_part = _subset(data, rest), _subset(data, held)
    on_rest = _train(rest_part, seed, trees)
    blend_on_rest = _blend(rest_part, columns)
    scores = {
        "ranker": recall_at(held_part, on_rest.predict(held_part["x"]), 10),
        "blend": recall_at(held_part, blend_on_rest.predict(held_part["x"]), 10),
        **{name: recall_at(held_part, held_part["x"][:, c], 10) for name, c in members.items()},
    }
    on_rest_alone = {n: recall_at(rest_part, rest_part["x"][:, c], 10) for n, c in named.items()}
    best_member = max(named, key=lambda n: (on_rest_alone[n], -columns.index(named[n])))
    value = []
    for j, name in enumerate(named):
        without = _blend(rest_part, columns, left_out=j) if len(columns) > 1 else None
        held_without = recall_at(held_part, without.predict(held_part["x"]), 10) if without else 0.0
        value.append(
            {
                "member": name,
                "alone": round(scores[name], 6),
                "blend_without": round(held_without, 6),
                "marginal": round(scores["blend"] - held_without, 6),
            }
        )
    gain = round(scores["ranker"] - scores["blend"], 6)
    gain_member = round(scores["ranker"] - scores[best_member], 6)
    applied = decide(scores, best_member, len(held))
    ranker = _train(data, seed, trees)  # every validation user, the chosen tree count
    record: dict[str, Any] = {
        "users": len(users),
        "held_back_users": len(held),
        "trees": trees,
        "held_back_recall@10": {k: round(v, 6) for k, v in scores.items()},
        "best_member": best_member,
        "gain_over_blend": gain,
        "gain_over_best_member": gain_member,
        "applied": applied,
        "member_value": value,
    }
    if applied == "ranker":
        return ranker, ranker, record
    if applied == "blend":
        blend = _blend(data, columns)  # its weights chosen again on every validation user
    else:
        blend = CandidateBlend(np.eye(len(columns))[columns.index(named[best_member])], columns)
    record["blend_weights"] = [round(float(w), 4) for w in blend.weights]
    return ranker, blend, record


def decide(held_back: dict[str, float], best_member: str, n_held: int = MIN_HELD_BACK) -> str:
    """What the submission applies, from the held-back scores: the ranker only where it
    beats both the blend and the best member; else the blend where it is at least that
    member; else the member alone (a ranker or blend that loses to its best member never
    goes out). Fewer than ``MIN_HELD_BACK`` held-back users decide nothing: the blend.

    >>> decide({"ranker": 0.30, "blend": 0.29, "ease": 0.31}, "ease")
    'ease'
    >>> decide({"ranker": 0.32, "blend": 0.29, "ease": 0.31}, "ease")
    'ranker'
    >>> decide({"ranker": 0.30, "blend": 0.31, "ease": 0.31}, "ease")
    'blend'
    """
    if n_held < MIN_HELD_BACK:
        return "blend"
    ranker, blend, member = (held_back[k] for k in ("ranker", "blend", best_member))
    if ranker > blend and ranker > member:
        return "ranker"
    return "blend" if blend >= member else best_member


def recall_at(part: dict[str, Any], scores: np.ndarray, k: int) -> float:
    """Recall@k of ``scores`` among the candidates of ``part`` (:func:`grouped_recall`)."""
    return grouped_recall(part["y"], scores, part["group"], k)


def apply_ranker(
    ctx: Context,
    ranker: Any,
    n_users: int,
    n_candidates: int | Sequence[int],
    available_only: bool,
    k: int,
    batch_size: int,
) -> np.ndarray:
    """Top-k of every user: candidates in the ranker's order (or the blend's), then (if a
    user has fewer than k candidates) the other unseen items by mean z-score."""
    out = np.empty((n_users, k), dtype=np.int64)
    for start in range(0, n_users, batch_size):
        rows = list(range(start, min(start + batch_size, n_users)))
        b, i, feats, mean_z = candidate_batch(ctx, rows, n_candidates, available_only)
        scores = mean_z.clone() - 1e6  # not a candidate: after every candidate
        if len(b):
            scores[b, i] = torch.from_numpy(ranker.predict(feats.numpy())).float()
        scores[torch.from_numpy(ctx.history[rows].toarray()) > 0] = -torch.inf
        values, top = best_first(scores, k)  # equal scores in item order, as everywhere
        if torch.isinf(values).any():
            raise LightrecError(f"a user has fewer than {k} unseen items")
        out[start : start + len(rows)] = top.numpy()
    return out
