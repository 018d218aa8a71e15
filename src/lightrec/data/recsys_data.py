"""RecSysDataModule: read -> clean -> encode ids -> split -> cache -> views.

The prepared data is a set of flat arrays sorted by (user, time, file order): ``user``,
``item`` (contiguous ints), ``time`` and ``split`` (0 train, 1 valid, 2 test), plus the
maps back to the original ids. Every view (CSR matrices for the autoencoders and EASE,
time-ordered sequences for BERT4Rec) is a cheap slice of those arrays.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import scipy.sparse as sp
from torch.utils.data import DataLoader

from lightrec.data import cache
from lightrec.data.batches import CSRCollate, SequenceCollate, csr_from_sorted, sequence_matrix
from lightrec.data.datasets import movielens_100k
from lightrec.data.splits import STRATEGIES, TEST, TRAIN, VALID, split_labels
from lightrec.errors import LightrecError

log = logging.getLogger(__name__)

ROLES = ("user", "item", "time")
HOLDOUTS = ("valid", "valid_and_test")
VIEWS = ("csr", "sequence")


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
            raise LightrecError(
                f"data file {path} has no column {name!r} for the {role} "
                f"(it has: {have}); set data.columns.{role}"
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


def encode_and_split(
    log_: Interactions,
    min_interactions: int,
    split_strategy: str,
    holdout: str,
    valid_ratio: float,
    split_seed: int,
    last_n: int = 1,
    random_m: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Sort by (user, time, file order), de-duplicate, filter, encode ids, split.

    De-duplication keeps each (user, item) pair's *earliest* row: an item re-consumed later
    is still one the user already knew, so it must not become a held-out "new" item.
    Ids are encoded in sorted order of the original ids (numeric or lexicographic).
    """
    u_codes, u_uniques = pd.factorize(log_.user, sort=True)
    i_codes, i_uniques = pd.factorize(log_.item, sort=True)
    order = np.lexsort((log_.time, u_codes))  # stable: equal times keep file order
    u, i, t = u_codes[order], i_codes[order], log_.time[order]

    pair = u.astype(np.int64) * max(len(i_uniques), 1) + i
    keep = ~pd.Series(pair).duplicated(keep="first").to_numpy()
    n_dup = int((~keep).sum())
    if n_dup:
        log.info("kept the earliest of each repeated (user, item): dropped %d rows", n_dup)
    per_user = np.bincount(u[keep], minlength=len(u_uniques))
    active = per_user >= min_interactions
    n_users_dropped = int((per_user > 0).sum() - active.sum())
    keep &= active[u]
    if not keep.any():
        raise LightrecError(
            f"no user has data.min_interactions={min_interactions} or more distinct items"
        )
    u, i, t = u[keep], i[keep], t[keep]

    # compact the codes (users and items that vanished with the filter), order preserved
    u_present = np.bincount(u, minlength=len(u_uniques)) > 0
    i_present = np.bincount(i, minlength=len(i_uniques)) > 0
    u = (np.cumsum(u_present) - 1)[u].astype(np.int32)
    i = (np.cumsum(i_present) - 1)[i].astype(np.int32)
    split = split_labels(u, split_strategy, holdout, valid_ratio, split_seed, last_n, random_m)

    arrays = {"user": u, "item": i, "time": t, "split": split}
    meta = {
        "user_ids": np.asarray(u_uniques)[u_present].tolist(),
        "item_ids": np.asarray(i_uniques)[i_present].tolist(),
        "stats": {
            **log_.stats,
            "dropped_duplicates": n_dup,
            "dropped_users_below_min": n_users_dropped,
            "rows": len(u),
            "train": int((split == TRAIN).sum()),
            "valid": int((split == VALID).sum()),
            "test": int((split == TEST).sum()),
        },
    }
    return arrays, meta


class RecSysDataModule(pl.LightningDataModule):
    """Prepared interactions with a disk cache, and the views the models train on.

    Args:
        path: CSV to read; None means the built-in MovieLens-100K under ``data_dir``.
        data_dir: where built-in datasets are prepared.
        columns: CSV column names for ``user``, ``item`` and ``time`` (None: file order).
        min_interactions: users with fewer distinct items are dropped.
        split_strategy: ``leave_one_out`` | ``last_n_random_m`` | ``random`` | ``none``.
        holdout: for leave_one_out and last_n_random_m, ``valid`` or ``valid_and_test``.
        valid_ratio: for ``random``; split_seed: for ``random`` and ``last_n_random_m``.
        last_n, random_m: for ``last_n_random_m``.
        view: ``csr`` (user x item rows: MultiVAE, EASE) or ``sequence`` (time-ordered
            item sequences of at most ``max_len``, left-padded: BERT4Rec).
        batch_size, eval_batch_size, num_workers: data loading.
        use_cache, cache_dir: the disk cache (see lightrec.data.cache).
    """

    def __init__(
        self,
        path: str | None,
        data_dir: str,
        columns: Mapping[str, str | None],
        min_interactions: int,
        split_strategy: str,
        holdout: str,
        valid_ratio: float,
        split_seed: int,
        batch_size: int,
        eval_batch_size: int,
        last_n: int = 1,
        random_m: int = 0,
        view: str = "csr",
        max_len: int = 0,
        num_workers: int = 0,
        use_cache: bool = True,
        cache_dir: str = "~/.cache/recsys",
    ) -> None:
        super().__init__()
        if split_strategy not in STRATEGIES:
            raise LightrecError(
                f"data.split_strategy={split_strategy!r} is not one of {', '.join(STRATEGIES)}"
            )
        if view not in VIEWS:
            raise LightrecError(f"data.view={view!r} is not one of {', '.join(VIEWS)}")
        if view == "sequence" and max_len < 2:
            raise LightrecError(f"data.max_len={max_len} must be at least 2 for sequences")
        if holdout not in HOLDOUTS:
            raise LightrecError(f"data.holdout={holdout!r} is not one of {', '.join(HOLDOUTS)}")
        self.path = path
        self.data_dir = data_dir
        self.columns = {role: columns[role] for role in ROLES}
        self.min_interactions = int(min_interactions)
        self.split_strategy = split_strategy
        self.holdout = holdout
        self.valid_ratio = float(valid_ratio)
        self.split_seed = int(split_seed)
        self.last_n = int(last_n)
        self.random_m = int(random_m)
        self.view = view
        self.max_len = int(max_len)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.use_cache = bool(use_cache)
        self.cache_dir = str(Path(cache_dir).expanduser())
        self.arrays: dict[str, np.ndarray] | None = None
        self.meta: dict[str, Any] = {}
        self.from_cache = False

    # ---------------------------------------------------------------- preparation
    @property
    def data_path(self) -> Path:
        if self.path is None:
            return movielens_100k(self.data_dir)
        return Path(self.path).expanduser()

    def split_params(self) -> dict[str, Any]:
        """Every parameter that shapes the prepared arrays (and only those)."""
        params: dict[str, Any] = {
            "columns": self.columns,
            "min_interactions": self.min_interactions,
            "split_strategy": self.split_strategy,
        }
        if self.split_strategy in ("leave_one_out", "last_n_random_m"):
            params["holdout"] = self.holdout
        if self.split_strategy == "last_n_random_m":
            params.update(last_n=self.last_n, random_m=self.random_m, split_seed=self.split_seed)
        if self.split_strategy == "random":
            params.update(valid_ratio=self.valid_ratio, split_seed=self.split_seed)
        return params

    def prepare_data(self) -> None:
        self.load()

    def load(self) -> None:
        """Load the prepared arrays from the cache, or build (and cache) them."""
        if self.arrays is not None:
            return
        path = self.data_path
        if not path.is_file():
            raise LightrecError(f"data file {path} does not exist (set data.path to a CSV file)")
        key = None
        if self.use_cache:
            key = cache.cache_key(self.split_params(), cache.file_md5(path, self.cache_dir))
            try:
                hit = cache.load(self.cache_dir, key)
            except cache.CorruptEntry as e:
                warnings.warn(
                    f"cache entry {cache.entry_dir(self.cache_dir, key)} is corrupt ({e}); "
                    "rebuilding it",
                    stacklevel=2,
                )
                cache.remove(self.cache_dir, key)
                hit = None
            if hit is not None:
                self.arrays, self.meta = hit
                self.from_cache = True
                return
        interactions = read_interactions(path, self.columns)
        self.arrays, self.meta = encode_and_split(
            interactions, self.min_interactions, self.split_strategy, self.holdout,
            self.valid_ratio, self.split_seed, self.last_n, self.random_m,
        )  # fmt: skip
        self.meta["data_path"] = str(path)
        self.meta["params"] = self.split_params()
        log.info("prepared %s: %s", path, self.meta["stats"])
        if key is not None:
            cache.save(self.cache_dir, key, self.arrays, self.meta)

    # ---------------------------------------------------------------- views
    def setup(self, stage: str | None = None) -> None:
        self.load()
        if hasattr(self, "train_csr"):
            return
        a = self.arrays
        assert a is not None
        self.num_users = len(self.meta["user_ids"])
        self.num_items = len(self.meta["item_ids"])
        u, i, s = a["user"], a["item"], a["split"]
        shape = (self.num_users, self.num_items)
        self.train_csr = csr_from_sorted(u, i, s == TRAIN, *shape)
        self.valid_csr = csr_from_sorted(u, i, s == VALID, *shape)
        self.test_csr = csr_from_sorted(u, i, s == TEST, *shape)
        if self.view == "sequence":
            # item ids shift by one: 0 pads, num_items + 1 is [MASK]
            self.mask_token = self.num_items + 1
            args = (u, i)
            self.train_seq = sequence_matrix(*args, s == TRAIN, self.num_users, self.max_len)
            self.valid_seq = sequence_matrix(*args, s == TRAIN, self.num_users, self.max_len,
                                             self.mask_token)  # fmt: skip
            self.test_seq = sequence_matrix(*args, s != TEST, self.num_users, self.max_len,
                                            self.mask_token)  # fmt: skip

    @property
    def has_validation(self) -> bool:
        return self.valid_csr.nnz > 0

    @property
    def has_test(self) -> bool:
        return self.test_csr.nnz > 0

    def id_maps(self) -> dict[str, list]:
        return {"user_ids": self.meta["user_ids"], "item_ids": self.meta["item_ids"]}

    def _collate(self, split: str, inputs: sp.csr_matrix, targets: sp.csr_matrix | None):
        if self.view == "sequence":
            return SequenceCollate(getattr(self, f"{split}_seq"), inputs, targets)
        return CSRCollate(inputs, targets)

    def _loader(self, users: np.ndarray, collate: CSRCollate, train: bool) -> DataLoader:
        return DataLoader(
            users,  # a numpy array of user indices is a valid map-style dataset
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            collate_fn=collate,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        users = np.flatnonzero(np.diff(self.train_csr.indptr) > 0)
        if self.view == "sequence":  # the sequences are the whole input
            return self._loader(users, SequenceCollate(self.train_seq), train=True)
        return self._loader(users, CSRCollate(self.train_csr), train=True)

    def val_dataloader(self) -> DataLoader:
        users = np.flatnonzero(np.diff(self.valid_csr.indptr) > 0)
        collate = self._collate("valid", self.train_csr, self.valid_csr)
        return self._loader(users, collate, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test users' input is their train *and* validation items (the selected model is
        judged on what follows everything it could have seen)."""
        users = np.flatnonzero(np.diff(self.test_csr.indptr) > 0)
        history = (self.train_csr + self.valid_csr).tocsr()
        return self._loader(users, self._collate("test", history, self.test_csr), train=False)


@dataclass
class History:
    """Every user's full history over a trained model's item map (for prediction)."""

    csr: sp.csr_matrix  # (users, items) binary
    users: np.ndarray  # original user ids, sorted; row r of csr is users[r]
    user: np.ndarray  # rows sorted by (user, time, file order), earliest of each repeat
    item: np.ndarray
    n_unknown: int  # rows naming items the model never saw (ignored)

    def sequences(self, max_len: int, mask_token: int) -> np.ndarray:
        """Most recent ``max_len - 1`` items of each user, then [MASK]."""
        keep = np.ones(len(self.user), dtype=bool)
        return sequence_matrix(self.user, self.item, keep, len(self.users), max_len, mask_token)


def full_history(log_: Interactions, item_ids: list) -> History:
    """All rows of the log, over the model's items. Every user of the log is served, seen in
    training or not; rows with items the model never saw are dropped and counted."""
    users, u = np.unique(log_.user.to_numpy(), return_inverse=True)
    i = pd.Index(item_ids).get_indexer(log_.item)
    known = i >= 0
    u, i, t = u[known], i[known], log_.time[known]
    order = np.lexsort((t, u))
    u, i = u[order], i[order]
    first = ~pd.Series(u.astype(np.int64) * len(item_ids) + i).duplicated().to_numpy()
    u, i = u[first], i[first]
    csr = csr_from_sorted(u, i, np.ones(len(u), dtype=bool), len(users), len(item_ids))
    return History(csr, users, u, i, int((~known).sum()))
