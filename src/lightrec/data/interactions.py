"""An interaction log: reading it, the order of its rows, and every user's history.

The rules every stage shares live here, once:

- a CSV is read by :func:`read_interactions` (rows with a missing user, item or time are
  dropped and counted; ids keep one type);
- rows are ordered by (user, time, file order), and a repeated (user, item) keeps its
  *earliest* row (:func:`first_rows`): an item consumed again later is one the user already
  knew, so it never becomes a held-out "new" item;
- predict, the notebooks and blending score every user from the full history in the file
  (:func:`full_history`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lightrec.data.batches import csr_from_sorted
from lightrec.data.sequences import sequence_matrix
from lightrec.errors import LightrecError

log = logging.getLogger(__name__)

ROLES = ("user", "item", "time")


@dataclass
class Interactions:
    """A cleaned interaction log with original ids, in file order."""

    user: pd.Series
    item: pd.Series
    time: np.ndarray
    stats: dict[str, int]


def read_interactions(path: str | Path, columns: Mapping[str, str | None]) -> Interactions:
    """Read a CSV log; drop rows with a missing user, item or time; normalise id types.

    Other columns are ignored. A ``time`` column of None means file order. Raises
    LightrecError with one sentence naming the file, column or row on bad input.
    """
    path = Path(path).expanduser()
    names = {role: columns[role] for role in ROLES}
    if names["user"] is None or names["item"] is None:
        raise LightrecError("data.columns.user and data.columns.item must name CSV columns")
    if not path.is_file():
        raise LightrecError(f"data file {path} does not exist (set data.path to a CSV file)")
    try:
        header = pd.read_csv(path, nrows=0)
    except pd.errors.EmptyDataError:
        raise LightrecError(f"data file {path} is empty: expected a header and rows") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        raise LightrecError(f"data file {path} is not a readable CSV ({e})") from None
    for role, name in names.items():
        if name is not None and name not in header.columns:
            have = ", ".join(map(str, header.columns))
            hint = f"; set data.columns.{role}"
            if len(header.columns) == 1 and (sep := _other_separator(str(header.columns[0]))):
                hint = f"; is it separated by {sep!r}? lightrec reads comma-separated files"
            raise LightrecError(
                f"data file {path} has no column {name!r} for the {role} (it has: {have}){hint}"
            )
    wanted = [n for n in names.values() if n is not None]
    try:
        df = pd.read_csv(path, usecols=wanted)
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as e:
        raise LightrecError(f"data file {path} could not be parsed ({e})") from None
    n_read = len(df)
    if n_read == 0:
        raise LightrecError(f"data file {path} has a header but no rows")

    missing = df[wanted].isna().any(axis=1).to_numpy()
    n_missing = int(missing.sum())
    if n_missing:
        log.warning("%s: dropped %d rows with a missing user, item or time", path, n_missing)
        df = df.loc[~missing]
        if len(df) == 0:
            raise LightrecError(f"data file {path} has no row with both a user and an item")
    user = _ids(df[names["user"]])
    item = _ids(df[names["item"]])
    if names["time"] is None:
        time = np.arange(len(df), dtype=np.int64)
    else:
        time = _times(df[names["time"]], path, names["time"])
    return Interactions(user, item, time, {"rows_read": n_read, "dropped_missing": n_missing})


def _other_separator(header: str) -> str | None:
    return next((sep for sep in (";", "\t", "|") if sep in header), None)


def _ids(s: pd.Series) -> pd.Series:
    """Integral ids stay ints (pandas reads them as float when a value was missing);
    anything else becomes a string, so the maps hold one type."""
    if pd.api.types.is_float_dtype(s) and np.all(np.mod(s.to_numpy(), 1) == 0):
        return s.astype(np.int64)
    if pd.api.types.is_integer_dtype(s):
        return s.astype(np.int64)
    return s.astype(str)


def _times(s: pd.Series, path: Path, name: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy()
    parsed = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LightrecError(
            f"data file {path}, row {s.index[row] + 2}: column {name!r} holds "
            f"{s.iloc[row]!r}, which is neither a number nor a date"
        )
    return parsed.astype("int64").to_numpy()


def first_rows(user: np.ndarray, item: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Indices of the rows to keep, in (user, time, file order) order: each (user, item)
    pair's earliest row. ``user`` and ``item`` are non-negative integer codes.

    >>> first_rows(np.array([1, 0, 0, 0]), np.array([7, 5, 6, 5]), np.array([0, 3, 2, 1])).tolist()
    [3, 2, 0]
    """
    order = np.lexsort((time, user))  # stable: equal times keep file order
    width = int(item.max()) + 1 if len(item) else 1
    pair = user[order].astype(np.int64) * width + item[order]
    return order[~pd.Series(pair).duplicated(keep="first").to_numpy()]


@dataclass
class History:
    """Every user's full history over a trained model's item map (for prediction)."""

    csr: sp.csr_matrix  # (users, items) binary
    users: np.ndarray  # original user ids, sorted; row r of csr is users[r]
    user: np.ndarray  # rows sorted by (user, time, file order), earliest of each repeat
    item: np.ndarray
    n_unknown: int  # rows naming items the model never saw (ignored)

    def sequences(self, max_len: int) -> np.ndarray:
        """Each user's most recent ``max_len`` items as tokens (the sequence view)."""
        keep = np.ones(len(self.user), dtype=bool)
        return sequence_matrix(self.user, self.item, keep, len(self.users), max_len)


def full_history(log_: Interactions, item_ids: list) -> History:
    """All rows of the log, over the model's items. Every user of the log is served, seen in
    training or not; rows with items the model never saw are dropped and counted."""
    users, u = np.unique(log_.user.to_numpy(), return_inverse=True)
    i = pd.Index(item_ids).get_indexer(log_.item)
    known = i >= 0
    u, i, t = u[known], i[known], log_.time[known]
    rows = first_rows(u, i, t)
    u, i = u[rows], i[rows]
    csr = csr_from_sorted(u, i, np.ones(len(u), dtype=bool), len(users), len(item_ids))
    return History(csr, users, u, i, int((~known).sum()))
