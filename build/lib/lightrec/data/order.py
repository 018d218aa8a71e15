"""The order of a log's rows, and de-duplication: rows ordered by (user, time, file order),
and a repeated (user, item) keeps its *earliest* row (:func:`first_rows`): an item consumed
again later is one the user already knew, so it never becomes a held-out "new" item.
Vectorised, in two halves on two cores for large logs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from lightrec.utils.parallel import cores, in_parallel


@dataclass
class Ordered:
    """The rows kept by :func:`first_rows`, in (user, time, file order) order."""

    rows: np.ndarray  # their indices in the input
    user: np.ndarray  # their values, int64
    item: np.ndarray
    time: np.ndarray


def first_rows(user: np.ndarray, item: np.ndarray, time: np.ndarray) -> Ordered:
    """Each (user, item) pair's earliest row, ordered by (user, time, file order).
    ``user`` and ``item`` are non-negative integer codes.

    >>> kept = first_rows(np.array([1, 0, 0, 0]), np.array([7, 5, 6, 5]), np.array([0, 3, 2, 1]))
    >>> kept.rows.tolist(), kept.user.tolist(), kept.time.tolist()
    ([3, 2, 0], [0, 0, 1], [1, 2, 0])

    The order comes from one stable sort of ``user * span + (time - min) / gcd`` when that
    key fits in 63 bits (it does for second timestamps even at MovieLens-20M's size), the
    two halves of the users sorted at once on two cores; the pairs' repeats are found with a
    hash. 20M rows take about a third of a two-key ``np.lexsort`` (docs/BENCHMARKS.md).
    Float times, or a key that does not fit, use ``np.lexsort``.
    """
    user = np.asarray(user, dtype=np.int64)
    item = np.asarray(item, dtype=np.int64)
    time = np.asarray(time)
    if len(user) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Ordered(empty, empty, empty, time[:0])
    counts = np.bincount(user)
    split = _halves(counts)  # the users of the two halves never share a key or a pair
    key = _user_time_key(user, time)
    if key is not None:
        order = _stable_argsort(key, user, split)  # equal times keep file order
        del key
        # sorted by user: the users are each user's count of rows in turn (no gather)
        u = np.repeat(np.arange(len(counts)), counts)
    else:
        order = np.lexsort((time, user))
        u = user[order]
    i = item[order]
    pair = u * (int(item.max()) + 1)
    pair += i
    if not split:  # one half: a thread pool would cost more than a small log's hash
        keep = _first_of_each(pair)
    else:
        at = int(counts[:split].sum())  # where the second half starts, sorted
        halves = (pair[:at], pair[at:])
        keep = np.concatenate(in_parallel([partial(_first_of_each, p) for p in halves]))
        del halves
    del pair
    rows = order[keep]
    kept_before = np.concatenate([[0], np.cumsum(keep)])  # kept rows before each position
    ends = np.cumsum(counts)
    kept_counts = kept_before[ends] - kept_before[ends - counts]
    return Ordered(rows, np.repeat(np.arange(len(counts)), kept_counts), i[keep], time[rows])


def _argsort_part(key: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return idx[np.argsort(key[idx], kind="stable")]


def _first_of_each(pair: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each value (a hash, in the given order)."""
    return ~pd.Series(pair, copy=False).duplicated(keep="first").to_numpy()


def _halves(counts: np.ndarray) -> int:
    """The first user of the second half of the rows (0: do not split, too few rows)."""
    n = int(counts.sum())
    if n < 1_000_000 or cores() < 2:
        return 0
    return int(np.searchsorted(np.cumsum(counts), n // 2)) + 1


def _stable_argsort(key: np.ndarray, user: np.ndarray, split: int) -> np.ndarray:
    """``np.argsort(key, kind="stable")``, the two halves of the users sorted at once (the
    key grows with the user, and numpy sorts without the GIL)."""
    if not split:
        return np.argsort(key, kind="stable")
    low = user < split
    parts = [np.flatnonzero(low), np.flatnonzero(~low)]
    sorted_parts = in_parallel([partial(_argsort_part, key, idx) for idx in parts])
    return np.concatenate(sorted_parts)


def _user_time_key(user: np.ndarray, time: np.ndarray) -> np.ndarray | None:
    """``user * span + (time - t0) // step``, ordered like (user, time); None when such a
    key would not fit in 63 bits (or times are not integers)."""
    if not np.issubdtype(time.dtype, np.integer):
        return None
    t0, t1 = int(time.min()), int(time.max())
    limit = 2**62 // (int(user.max()) + 1)  # the packed key must stay below 2**62
    if t1 - t0 < limit:
        packed = user * (t1 - t0 + 1)
        packed += time
        packed -= t0
        return packed
    offset = time.astype(np.int64) - t0  # coarser clocks (dates parsed to nanoseconds) shrink
    step = int(np.gcd.reduce(offset)) or 1
    offset //= step
    span = int(offset.max()) + 1
    if span > limit:
        return None
    packed = user * span
    packed += offset
    return packed
