"""Synthetic interaction logs shaped like real ones, for benchmarks.

``python benchmarks/synth.py --rows 5000000 --out log.csv`` writes ``user,item,time`` with
lognormal user activity (a long tail of heavy users) and Zipf-like item popularity.
The default shape follows MovieLens-20M after filtering: 31,360 users x 6,807 items.
``--items`` adds the side features a re-ranker reads (year, genres, directors, writers).
``--tastes K`` gives the log structure a model can learn: each item belongs to one of K
taste groups, each user likes a few groups (Dirichlet), and draws distinct items by
popularity times that liking (a user's rows in time by the draw's strength); without it a
log holds popularity alone, so a gradient model's early stopping fires after a few epochs
where on a real log it runs on (a structured log times what a real one would; its scores
still mean nothing about real data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def _activity(rng: np.random.Generator, rows: int, users: int) -> np.ndarray:
    """Rows per user, lognormal (a long tail of heavy users), about ``rows`` in all; fewer
    users on a small log (not negative counts)."""
    users = min(users, max(1, rows // 10))
    activity = np.exp(0.9 * rng.standard_normal(users))
    return np.maximum(1, np.round(activity / activity.sum() * rows)).astype(np.int64)


def synth_log(
    rows: int,
    users: int = 31_360,
    items: int = 6_807,
    zipf_a: float = 1.0,
    seed: int = 0,
    tastes: int = 0,
) -> pd.DataFrame:
    if tastes:
        return _tasteful_log(rows, users, items, zipf_a, seed, tastes)
    rng = np.random.default_rng(seed)
    counts = _activity(rng, rows, users)
    users = len(counts)
    counts[np.argmax(counts)] += rows - counts.sum()  # exactly `rows` rows
    popularity = 1.0 / np.arange(1, items + 1) ** zipf_a
    item = rng.choice(items, size=rows, p=popularity / popularity.sum())
    item = rng.permutation(items)[item]  # popular items are not simply the low ids
    user = np.repeat(np.arange(users), counts)
    time = 1_000_000_000 + rng.integers(0, 10**8, size=rows)
    order = rng.permutation(rows)  # a log is not sorted by user
    return pd.DataFrame({"user": user[order], "item": item[order], "time": time[order]})


def _tasteful_log(
    rows: int, users: int, items: int, zipf_a: float, seed: int, tastes: int
) -> pd.DataFrame:
    """:func:`synth_log` with structure: distinct items per user (Gumbel top-k of log
    popularity + log liking of the item's group), a user's rows in time by the draw's rank
    (the strongest first)."""
    rng = np.random.default_rng(seed)
    counts = np.minimum(_activity(rng, rows, users), items // 2)
    users = len(counts)
    group = rng.integers(0, tastes, items)
    log_pop = -zipf_a * np.log(np.arange(1, items + 1))[rng.permutation(items)]
    liking = rng.dirichlet(np.full(tastes, 0.3), size=users)
    users_, items_, steps = [], [], []
    for lo in range(0, users, 2048):  # chunks of users: a 31k x 7k float64 is 1.7 GB
        hi = min(users, lo + 2048)
        keys = log_pop + np.log(liking[lo:hi, group] + 1e-9)
        keys += rng.gumbel(size=keys.shape)
        order = np.argsort(-keys, axis=1)
        # each user's first counts[u] draws; the draw's rank is its time (strongest first)
        taken = np.arange(items) < counts[lo:hi, None]
        row, step = np.nonzero(taken)
        users_.append(row + lo)
        items_.append(order[taken])
        steps.append(step)
    user, item, step = np.concatenate(users_), np.concatenate(items_), np.concatenate(steps)
    start = rng.integers(0, 10**8, size=users)
    time = 1_000_000_000 + start[user] + 3_600 * step
    order = rng.permutation(len(user))
    return pd.DataFrame({"user": user[order], "item": item[order], "time": time[order]})


def synth_items(items: int = 6_807, seed: int = 0) -> pd.DataFrame:
    """Side features shaped like the MovieLens competition's: a release year, 1-3 of 20
    genres, a director and 1-2 writers (Zipf-like, a few prolific), one row per item of
    :func:`synth_log`'s catalogue, multi-valued cells joined by ``|``."""
    rng = np.random.default_rng(seed + 1)

    def names(prefix: str, pool: int, per_item: np.ndarray) -> list[str]:
        weights = 1.0 / np.arange(1, pool + 1)
        draw = rng.choice(pool, size=int(per_item.sum()), p=weights / weights.sum())
        cells = np.split(draw, np.cumsum(per_item)[:-1])
        return ["|".join(f"{prefix}{v}" for v in sorted(set(c))) for c in cells]

    year = np.clip(np.round(2010 - rng.exponential(18.0, items)), 1915, 2019).astype(int)
    return pd.DataFrame(
        {
            "item": np.arange(items),
            "year": year,
            "genres": names("genre", 20, rng.integers(1, 4, items)),
            "directors": names("director", 3_000, np.ones(items, dtype=np.int64)),
            "writers": names("writer", 5_000, rng.integers(1, 3, items)),
        }
    )


def write_log(
    path: str | Path,
    rows: int,
    seed: int = 0,
    items: bool = False,
    users: int = 31_360,
    n_items: int = 6_807,
    tastes: int = 0,
) -> Path:
    """The log at ``path``; with ``items``, :func:`synth_items` as ``items.csv`` beside it,
    where ``data.item_features=auto`` finds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    synth_log(rows, users, n_items, seed=seed, tastes=tastes).to_csv(path, index=False)
    if items:
        synth_items(n_items, seed=seed).to_csv(path.parent / "items.csv", index=False)
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--items", action="store_true", help="also items.csv beside --out")
    ap.add_argument("--users", type=int, default=31_360, help="ML-20M: 138493")
    ap.add_argument("--n-items", type=int, default=6_807, help="ML-20M: 26744")
    ap.add_argument("--tastes", type=int, default=0, help="taste groups (0: no structure)")
    a = ap.parse_args()
    print(write_log(a.out, a.rows, a.seed, a.items, a.users, a.n_items, a.tastes))
