"""Synthetic interaction logs shaped like real ones, for benchmarks.

``python benchmarks/synth.py --rows 5000000 --out log.csv`` writes ``user,item,time`` with
lognormal user activity (a long tail of heavy users) and Zipf-like item popularity.
The default shape follows MovieLens-20M after filtering: 31,360 users x 6,807 items.
``--items`` adds the side features a re-ranker reads (year, genres, directors, writers).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def synth_log(
    rows: int, users: int = 31_360, items: int = 6_807, zipf_a: float = 1.0, seed: int = 0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = min(users, max(1, rows // 10))  # small logs: fewer users, not negative counts
    activity = np.exp(0.9 * rng.standard_normal(users))
    counts = np.maximum(1, np.round(activity / activity.sum() * rows)).astype(np.int64)
    counts[np.argmax(counts)] += rows - counts.sum()  # exactly `rows` rows
    popularity = 1.0 / np.arange(1, items + 1) ** zipf_a
    item = rng.choice(items, size=rows, p=popularity / popularity.sum())
    item = rng.permutation(items)[item]  # popular items are not simply the low ids
    user = np.repeat(np.arange(users), counts)
    time = 1_000_000_000 + rng.integers(0, 10**8, size=rows)
    order = rng.permutation(rows)  # a log is not sorted by user
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
) -> Path:
    """The log at ``path``; with ``items``, :func:`synth_items` as ``items.csv`` beside it,
    where ``data.item_features=auto`` finds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    synth_log(rows, users, n_items, seed=seed).to_csv(path, index=False)
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
    a = ap.parse_args()
    print(write_log(a.out, a.rows, a.seed, a.items, a.users, a.n_items))
