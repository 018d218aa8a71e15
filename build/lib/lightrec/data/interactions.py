"""An interaction log: reading it, the order of its rows, and every user's history.

The rules every stage shares live here, once:

- a CSV is read by :func:`read_interactions` (rows with a missing user, item or time are
  dropped and counted; ids are text, typed once by :func:`typed_ids`, matched across
  files by :func:`index_of`);
- rows are ordered by (user, time, file order), and a repeated (user, item) keeps its
  *earliest* row (:func:`lightrec.data.order.first_rows`): an item consumed again later is
  one the user already knew, so it never becomes a held-out "new" item;
- predict, the notebooks and blending score every user from the full history in the file
  (:func:`full_history`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lightrec.data.batches import SEQUENCE, CSRCollate, View, eval_collate
from lightrec.data.order import first_rows
from lightrec.data.sequences import sequence_matrix
from lightrec.errors import LightrecError
from lightrec.utils.parallel import in_parallel

log = logging.getLogger(__name__)

ROLES = ("user", "item", "time")
SCAN_BLOCK = 1 << 24  # bytes :func:`_plain_numbers` reads at a time


@dataclass
class Interactions:
    """A cleaned interaction log with original ids, in file order."""

    user: pd.Series
    item: pd.Series
    time: np.ndarray
    stats: dict[str, int]


def read_interactions(path: str | Path, columns: Mapping[str, str | None]) -> Interactions:
    """Read a CSV log; drop rows with a missing user, item or time; type the ids.

    Ids are text (``007`` and ``7`` are two users), typed by :func:`typed_ids`; a file
    whose ids are all plainly written numbers is parsed as numbers, the same ids faster.
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
    ids = [names["user"], names["item"]]
    # pandas' C parser is twice as slow with usecols: read a narrow file whole (the
    # prepared MovieLens-100K has one extra column), pick columns only from a wide one
    usecols = wanted if len(header.columns) > 2 * len(wanted) else None
    # numbers are read as numbers (text would cost a Python string per row), while another
    # thread checks that no id is written as its number would not be ("007", "+7")
    plain, df = in_parallel([partial(_plain_numbers, path), partial(_read, path, usecols)])
    if not plain and not all(pd.api.types.is_object_dtype(df[c]) for c in ids):
        df = _read(path, usecols, dtype={c: object for c in ids})
    elif any(
        pd.api.types.is_float_dtype(df[c])  # "7.0"? a missing cell
        or pd.api.types.is_unsigned_integer_dtype(df[c])  # past int64: ids as text
        for c in ids
    ):
        df = _read(path, usecols, dtype={c: object for c in ids})
    n_read = len(df)
    if n_read == 0:
        raise LightrecError(f"data file {path} has a header but no rows")

    missing = np.zeros(n_read, dtype=bool)
    for name in wanted:
        if df[name].hasnans:
            missing |= df[name].isna().to_numpy()
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
        time = parse_times(df[names["time"]], path, names["time"])
    return Interactions(user, item, time, {"rows_read": n_read, "dropped_missing": n_missing})


def _other_separator(header: str) -> str | None:
    return next((sep for sep in (";", "\t", "|") if sep in header), None)


def _read(path: Path, usecols: list[str] | None, dtype: dict | None = None) -> pd.DataFrame:
    try:
        return pd.read_csv(path, usecols=usecols, dtype=dtype)
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError) as e:
        raise LightrecError(f"data file {path} could not be parsed ({e})") from None


def _plain_numbers(path: Path) -> bool:
    """Whether no field of the file is a number written as its value would not be written:
    no field starts with a zero followed by a digit or with ``-0``, and no ``+``, blank,
    tab or quote occurs anywhere (each would let the numeric parser merge ``007`` with
    ``7``). Compressed files are not looked into (False). About 0.6 s for 20M rows, on a
    thread beside the parser."""
    if path.suffix.lower() in {".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"}:
        return False
    before = b"\n\n"  # the previous block's last two bytes: patterns across a boundary
    with open(path, "rb") as f:
        while block := f.read(SCAN_BLOCK):
            if any(odd in block for odd in (b"+", b" ", b"\t", b'"')):  # memchr: fast
                return False
            minus = b"-" in block
            for part in (before + block[:2], block):
                b = np.frombuffer(part, dtype=np.uint8)
                if _starts_with(b, ord("0"), lambda x: (x >= ord("0")) & (x <= ord("9"))):
                    return False
                if minus and _starts_with(b, ord("-"), lambda x: x == ord("0")):
                    return False
            before = block[-2:].rjust(2, b"\n")
    return True


def _starts_with(b: np.ndarray, first: int, then: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Whether some field in the bytes ``b`` (after a comma or a newline) starts with the
    byte ``first`` followed by a byte for which ``then`` holds. The (separator, first)
    pairs are found as 16-bit words at both alignments: a few cheap passes."""
    for shift in (0, 1):
        words = b[shift : shift + (len(b) - shift) // 2 * 2].view("<u2")
        for sep in (ord(","), ord("\n")):
            after = np.flatnonzero(words == (sep | first << 8)) * 2 + shift + 2
            after = after[after < len(b)]
            if len(after) and then(b[after]).any():
                return True
    return False


def _ids(s: pd.Series) -> pd.Series:
    """Integers stay integers (the file holds no id a number would not write back);
    text is typed by :func:`typed_ids`, once per distinct id, as a categorical Series."""
    if pd.api.types.is_signed_integer_dtype(s):
        return s.astype(np.int64)
    codes, texts = pd.factorize(s)  # categorical: one Python object per distinct id
    typed = typed_ids(pd.Series(texts, dtype=object).astype(str))  # past int64: text
    return pd.Series(pd.Categorical.from_codes(codes, typed), index=s.index)


# the integers whose text a number keeps: no sign but "-", no leading zero, in int64
_CANONICAL_INT = r"0|-?[1-9][0-9]{0,18}"
_INT64_MAX = str(2**63 - 1)  # 19 digits: compared as text with other 19-digit ids


def typed_ids(texts: pd.Series) -> np.ndarray:
    """Ids read as text, typed: integers when every one is written as its number would be
    written (so the number writes back as the same text), else the texts themselves.
    ``007`` keeps the whole column as text: it and ``7`` stay two ids. The one rule for
    data files and side files alike.

    >>> typed_ids(pd.Series(["7", "12"])).tolist(), typed_ids(pd.Series(["7", "007"])).tolist()
    ([7, 12], ['7', '007'])
    """
    texts = texts.astype(object)
    if len(texts) and texts.str.fullmatch(_CANONICAL_INT).all():
        digits = texts.str.lstrip("-")
        if ((digits.str.len() < len(_INT64_MAX)) | (digits <= _INT64_MAX)).all():
            return texts.astype(np.int64).to_numpy()
    return texts.astype(str).to_numpy(dtype=object)


class IdIndex:
    """Positions of ids in a fixed list (an item or user map), built once: a server looks
    up each request's ids in the time of the request, not of the map (:func:`index_of`)."""

    def __init__(self, known: Sequence | np.ndarray) -> None:
        self.index = pd.Index(known)
        self._as_text: pd.Index | None = None  # built on the first lookup that needs it

    def positions(self, ids: pd.Series | np.ndarray | Sequence) -> np.ndarray:
        """Each id's position (-1 if absent). Ids typed differently (a file whose ids are
        all numbers against a map with a text id) are compared as text, which
        :func:`typed_ids` makes exact."""
        if isinstance(ids, pd.Series) and isinstance(ids.dtype, pd.CategoricalDtype):
            return self.positions(ids.cat.categories.to_numpy())[ids.cat.codes.to_numpy()]
        values = np.asarray(ids)
        index = self.index
        if len(index) and len(values) and (index.dtype.kind in "iu") != (values.dtype.kind in "iu"):
            if self._as_text is None:
                self._as_text = pd.Index(index.astype(str))
            return self._as_text.get_indexer(values.astype(str))
        return index.get_indexer(values)


def index_of(known: Sequence | np.ndarray, ids: pd.Series | np.ndarray) -> np.ndarray:
    """Each id's position in ``known`` (-1 if absent), ids compared as :class:`IdIndex`
    compares them."""
    return IdIndex(known).positions(ids)


def parse_times(s: pd.Series, path: str | Path, name: str) -> np.ndarray:
    """A time column as numbers: numbers as they are, dates (text, or instants a reader
    already parsed) as nanosecond instants; a value that is neither is one sentence naming
    the file, row and column."""
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy()
    if pd.api.types.is_datetime64_any_dtype(s):
        parsed = pd.to_datetime(s, utc=True)
    else:
        parsed = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LightrecError(
            f"data file {path}, row {s.index[row] + 2}: column {name!r} holds "
            f"{s.iloc[row]!r}, which is neither a number nor a date"
        )
    return parsed.dt.as_unit("ns").astype("int64").to_numpy()


def encode(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, uniques)`` with the uniques sorted, like ``pd.factorize(ids, sort=True)``.

    Non-negative integer ids no larger than a few times the row count (the usual case) are
    encoded with a presence table and a cumulative sum, a third of a hash factorisation's
    time on 20M rows; categorical ids (text ids as :func:`read_interactions` returns them)
    by sorting the categories alone; other ids go through ``pd.factorize``.

    >>> codes, uniques = encode(pd.Series([30, 10, 30, 20]))
    >>> codes.tolist(), uniques.tolist()
    ([2, 0, 2, 1], [10, 20, 30])
    >>> codes, uniques = encode(pd.Series(pd.Categorical(["b", "a", "b"], ["b", "c", "a"])))
    >>> codes.tolist(), uniques.tolist()       # "c" does not occur
    ([1, 0, 1], ['a', 'b'])
    """
    if isinstance(ids.dtype, pd.CategoricalDtype):
        categories = ids.cat.categories.to_numpy()
        cat_codes = ids.cat.codes.to_numpy()
        present = np.bincount(cat_codes, minlength=len(categories)) > 0
        order = np.argsort(categories, kind="stable")
        order = order[present[order]]
        code_of = np.full(len(categories), -1, dtype=np.int64)
        code_of[order] = np.arange(len(order))
        return code_of[cat_codes], categories[order]
    values = ids.to_numpy()
    if values.dtype.kind in "iu" and len(values):
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi <= 4 * len(values) + 1_000_000:
            present = np.zeros(hi + 1, dtype=bool)
            present[values] = True
            code_of = np.cumsum(present, dtype=np.int64) - 1
            return code_of[values], np.flatnonzero(present)
    codes, uniques = pd.factorize(ids, sort=True)
    return codes.astype(np.int64, copy=False), np.asarray(uniques)


class History:
    """Every user's full history over a trained model's item map (for prediction).

    ``csr`` (users x items, binary) comes from the (user, item) pairs alone, in linear time;
    the time order, which only the sequence view needs, is computed when asked for."""

    def __init__(
        self,
        user: np.ndarray,
        item: np.ndarray,
        time: np.ndarray,
        users: np.ndarray,
        n_items: int,
        n_unknown: int,
    ) -> None:
        self.users = users  # original user ids, sorted; row r of csr is users[r]
        self.n_unknown = n_unknown  # rows naming items the model never saw (ignored)
        self._user, self._item, self._time = user, item, time
        ones = np.ones(len(user), dtype=np.float32)
        csr = sp.csr_matrix((ones, (user, item)), shape=(len(users), n_items))
        csr.sum_duplicates()
        csr.data[:] = 1.0
        self.csr = csr

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(user row, item index, time)`` of every row read (repeats included)."""
        return self._user, self._item, self._time

    def sequences(self, max_len: int) -> np.ndarray:
        """Each user's most recent ``max_len`` items as tokens (the sequence view)."""
        kept = first_rows(self._user, self._item, self._time)
        everything = np.ones(len(kept.user), dtype=bool)
        return sequence_matrix(kept.user, kept.item, everything, len(self.users), max_len)

    def collate(self, view: View, max_len: int) -> CSRCollate:
        """Scoring batches of these histories for a model reading ``view`` (row r is user
        ``users[r]``): what predict, blend and the Python API score from."""
        seqs = self.sequences(max_len) if view == SEQUENCE else None
        return eval_collate(view, self.csr, None, seqs)


def full_history(log_: Interactions, item_ids: list, index: IdIndex | None = None) -> History:
    """All rows of the log, over the model's items (``index``: theirs, built once). Every
    user of the log is served, seen in training or not; rows with items the model never
    saw are dropped and counted."""
    u, users = encode(log_.user)
    i = (index or IdIndex(item_ids)).positions(log_.item)
    known = i >= 0
    if not known.all():
        u, i, t = u[known], i[known], log_.time[known]
    else:
        t = log_.time
    return History(u, i.astype(np.int64), t, np.asarray(users), len(item_ids), int((~known).sum()))
