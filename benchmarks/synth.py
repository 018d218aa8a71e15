"""Synthetic interaction logs shaped like real ones, for benchmarks.

``python benchmarks/synth.py --rows 5000000 --out log.csv`` writes ``user,item,time`` with
lognormal user activity (a long tail of heavy users) and Zipf-like item popularity.
The default shape follows MovieLens-20M after filtering: 31,360 users x 6,807 items.
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


def write_log(path: str | Path, rows: int, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    synth_log(rows, seed=seed).to_csv(path, index=False)
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    print(write_log(a.out, a.rows, a.seed))
