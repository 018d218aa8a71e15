"""The re-ranker's candidates and their features, for one stage (validation, or the
submission): each member's top items per user, and per (user, candidate) the members' z-scores
and ranks and their mean, the item's popularity and times, the user's activity and times, and
the user's affinity to the item's side information (:mod:`lightrec.combine.rerank` says which).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.combine.weights import normalise, ranks_of
from lightrec.data.item_features import ItemFeatures, time_to_year
from lightrec.runs.scoring import Scorer, check_finite

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
    recent: Scorer | None = None  # the first member scoring each user's latest items alone


RECENT_ITEMS = 5  # a user's latest items the recency feature scores from


def latest_rows(
    user: np.ndarray, item: np.ndarray, time: np.ndarray, n: int = RECENT_ITEMS
) -> np.ndarray:
    """Positions of each user's ``n`` latest rows (by time; file order breaks ties).

    >>> latest_rows(np.array([0, 1, 0, 0]), np.array([5, 6, 7, 8]), np.array([3, 1, 1, 2]), 2)
    array([0, 1, 3])
    """
    order = np.lexsort((np.arange(len(user)), time, user))  # by user, then time
    u = user[order]
    last_of_user = np.r_[u[1:] != u[:-1], True]
    # place from the end within each user: 0 for the latest
    ends = np.flatnonzero(last_of_user)
    starts = np.r_[0, ends[:-1] + 1]
    from_end = np.repeat(ends, ends - starts + 1) - np.arange(len(u))
    return np.sort(order[from_end < n])


def relative_log(counts: np.ndarray) -> np.ndarray:
    """Counts as log(1 + count / their mean): the same for a stage with more rows of the same
    shape. The ranker learns its thresholds on the validation stage's history, which lacks the
    validation rows, and applies them to the submission's, which has them (on Amazon Beauty's
    last 1 + 2 about half a user's rows): raw log counts would shift every item's popularity
    between the two.

    >>> relative_log(np.array([0, 1, 3])).round(2).tolist()
    [0.0, 0.56, 1.18]
    >>> relative_log(np.array([0, 2, 6])).round(2).tolist()  # twice the rows: the same
    [0.0, 0.56, 1.18]
    """
    mean = float(counts.mean()) if len(counts) else 0.0
    return np.log1p(counts / mean) if mean > 0 else np.zeros(len(counts))


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
        "pop_all": relative_log(np.diff(history.tocsc().indptr)),
        "pop_recent": relative_log(recent),
        "item_first_time": extreme_by(item, n_items, first=True),
        "item_mean_time": mean_by(item, n_items),
    }
    user_stats = {
        "user_items": relative_log(np.diff(history.indptr)),
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
    names += ["recent_z"] if ctx.recent is not None else []
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


def per_member(n_candidates: int | Sequence[int], n_members: int) -> list[int]:
    """Each member's candidate count: one count for all, or one per member."""
    if isinstance(n_candidates, int):
        return [n_candidates] * n_members
    assert len(n_candidates) == n_members
    return [int(n) for n in n_candidates]


@torch.no_grad()
def member_z(ctx: Context, rows: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each member's z-scores of user ``rows`` (seen items at -inf) and their ranks (0: the
    member's first item)."""
    zs, ranks = [], []
    for score in ctx.scorers:
        scores, seen = score(rows)
        check_finite(scores, rows)
        z = normalise(scores.float().cpu(), seen.cpu(), "zscore")
        zs.append(z)
        ranks.append(ranks_of(z).float())
    return zs, ranks


def target_ranks(
    ctx: Context, users: np.ndarray, targets: sp.csr_matrix, batch_size: int
) -> np.ndarray:
    """(validation items of ``users``, members): each member's rank of each item."""
    out = []
    for start in range(0, len(users), batch_size):
        rows = [int(u) for u in users[start : start + batch_size]]
        _, ranks = member_z(ctx, rows)
        b, i = targets[rows].nonzero()
        out.append(np.stack([r[b, i].numpy() for r in ranks], axis=1))
    return np.concatenate(out) if out else np.zeros((0, len(ctx.scorers)))


def choose_counts(ranks: np.ndarray, total: int, step: int, cap: int) -> list[int]:
    """Each member's candidate count, ``total`` in all: steps of ``step`` given one at a
    time to the member whose next ``step`` items hold the most validation items no member
    holds yet (greedy coverage; the first of equals), ``cap`` at most each.

    >>> ranks = np.array([[0, 9], [1, 9], [2, 9], [9, 0], [0, 1]])  # 5 items, 2 members
    >>> choose_counts(ranks, total=4, step=1, cap=4)  # member 0's top 3 and member 1's first
    [3, 1]
    """
    counts = [0] * ranks.shape[1]
    covered = np.zeros(len(ranks), dtype=bool)
    while sum(counts) + step <= total:
        gains = [
            int((~covered & (r >= n) & (r < n + step)).sum()) if n + step <= cap else -1
            for r, n in zip(ranks.T, counts, strict=True)
        ]
        best = int(np.argmax(gains))
        if gains[best] < 0:
            break
        counts[best] += step
        covered |= ranks[:, best] < counts[best]
    return counts


def reach_of(ranks: np.ndarray, counts: Sequence[int]) -> float:
    """The share of validation items among the candidates of ``counts``."""
    if not len(ranks):
        return 0.0
    return float((ranks < np.asarray(counts)[None, :]).any(axis=1).mean())


@torch.no_grad()
def candidate_batch(
    ctx: Context, rows: list[int], n_candidates: int | Sequence[int], available_only: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For user ``rows``: ``(batch_pos, item, features, mean_z)`` of every candidate (each
    member's top ``n_candidates``, one count or one per member), grouped by user in the
    order of ``rows``, and the mean z-score matrix (B, I)."""
    zs, ranks = member_z(ctx, rows)
    mask = None
    for z, n in zip(zs, per_member(n_candidates, len(zs)), strict=True):
        top = z.topk(min(n, z.shape[1]), dim=1).indices
        hit = torch.zeros_like(z, dtype=torch.bool).scatter_(1, top, True)
        mask = hit if mask is None else mask | hit
    assert mask is not None
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
    if ctx.recent is not None:  # how the user's latest items alone score the candidate
        recent, _ = ctx.recent(rows)
        cols.append(normalise(recent.float().cpu(), x, "zscore")[b, i])
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
    n_candidates: int | Sequence[int],
    available_only: bool,
    batch_size: int,
    targets: sp.csr_matrix | None = None,
) -> dict[str, Any]:
    """Candidates, features, (labels) and groups for ``users``, in batches; with labels,
    ``reached``: the share of the users' validation items that are candidates (what no
    ranking of the candidates can exceed)."""
    parts: dict[str, list] = {"user": [], "item": [], "x": [], "y": [], "group": []}
    positives = 0
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
            positives += int(targets[rows].nnz)
    out: dict[str, Any] = {k: np.concatenate(v) for k, v in parts.items() if v}
    if targets is not None:
        out["reached"] = round(float(out["y"].sum()) / max(positives, 1), 6)
    return out
