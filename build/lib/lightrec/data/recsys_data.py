"""RecSysDataModule: read -> clean -> encode ids -> split -> cache -> views.

The prepared data is a set of flat arrays sorted by (user, time, file order): ``user``,
``item`` (contiguous ints), ``time`` and ``split`` (0 train, 1 valid, 2 test), plus the
maps back to the original ids. Every view (CSR matrices for the autoencoders and EASE,
time-ordered sequences for the sequence models) is a cheap slice of those arrays.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from lightrec.data import cache
from lightrec.data.batches import (
    SEQUENCE,
    CSRCollate,
    DeviceBatches,
    Shard,
    View,
    csr_from_sorted,
    eval_collate,
    train_collate,
)
from lightrec.data.datasets import data_file
from lightrec.data.interactions import ROLES, Interactions, encode, read_interactions
from lightrec.data.item_features import ItemFeatures, feature_source, read_item_features
from lightrec.data.order import first_rows
from lightrec.data.sequences import sequence_matrix
from lightrec.data.splits import TEST, TRAIN, VALID, Holdout, SplitSpec, Strategy
from lightrec.errors import LightrecError
from lightrec.params import NonNegativeInt, OpenFraction, PositiveInt
from lightrec.utils.io import NoSpace, unwritable
from lightrec.utils.memory import available_bytes
from lightrec.utils.parallel import in_parallel

log = logging.getLogger(__name__)


def encode_and_split(
    log_: Interactions, min_interactions: int, split: SplitSpec
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Order and de-duplicate (:func:`~lightrec.data.interactions.first_rows`), filter users,
    encode ids, split.

    Ids are encoded in sorted order of the original ids (numeric or lexicographic).
    """
    u_codes, u_uniques = encode(log_.user)
    i_codes, i_uniques = encode(log_.item)
    kept = first_rows(u_codes, i_codes, log_.time)
    n_dup = len(u_codes) - len(kept.rows)
    if n_dup:
        log.info("kept the earliest of each repeated (user, item): dropped %d rows", n_dup)
    u, i, t = kept.user, kept.item, kept.time
    per_user = np.bincount(u, minlength=len(u_uniques))
    active = per_user >= min_interactions
    n_users_dropped = int((per_user > 0).sum() - active.sum())
    keep = active[u]
    if not keep.any():
        raise LightrecError(
            f"no user has data.min_interactions={min_interactions} or more distinct items"
        )
    if not keep.all():
        u, i, t = u[keep], i[keep], t[keep]

    # compact the codes (users and items that vanished with the filter), order preserved
    u_present = np.bincount(u, minlength=len(u_uniques)) > 0
    i_present = np.bincount(i, minlength=len(i_uniques)) > 0
    u = (np.cumsum(u_present) - 1)[u].astype(np.int32)
    i = (np.cumsum(i_present) - 1)[i].astype(np.int32)
    labels = split.labels(u)

    arrays = {"user": u, "item": i, "time": t, "split": labels}
    meta = {
        "user_ids": np.asarray(u_uniques)[u_present].tolist(),
        "item_ids": np.asarray(i_uniques)[i_present].tolist(),
        "stats": {
            **log_.stats,
            "dropped_duplicates": n_dup,
            "dropped_users_below_min": n_users_dropped,
            "rows": len(u),
            "train": int((labels == TRAIN).sum()),
            "valid": int((labels == VALID).sum()),
            "test": int((labels == TEST).sum()),
        },
    }
    return arrays, meta


class RecSysDataModule(pl.LightningDataModule):
    """Prepared interactions with a disk cache, and the views the models train on.

    Every argument comes from the ``data:`` block of the config (the YAML is the one source
    of defaults; ``configs/common/default_setup.yaml`` documents each key).

    Args:
        path: CSV to read; None means the built-in MovieLens-100K under ``data_dir``.
        data_dir: where built-in datasets are prepared.
        columns: CSV column names for ``user``, ``item`` and ``time`` (None: file order).
        min_interactions: users with fewer distinct items are dropped.
        split_strategy, holdout, valid_ratio, split_seed, last_n, random_m: the split
            (:class:`~lightrec.data.splits.SplitSpec`).
        view: the view the model reads (its class declares it, the config resolves it):
            ``csr`` (user x item rows) or ``sequence`` (each user's most recent ``max_len``
            items as tokens, left-padded); see :data:`~lightrec.data.batches.View`.
        batch_size, eval_batch_size, num_workers: data loading.
        on_device: keep the training data on the model's device and build training batches
            there (:class:`~lightrec.data.batches.DeviceBatches`): ``auto`` on a CUDA device
            with room for it in a single-process run, ``True`` anywhere (the CPU too),
            ``False`` never (batches are sliced on the host).
        use_cache, cache_dir: the disk cache (see lightrec.data.cache).
        item_features: item side information (:mod:`lightrec.data.item_features`): ``auto``
            (an ``items.csv`` beside the data file, as the built-in MovieLens-100K has),
            a folder of ``<field>.tsv`` files or a CSV, or None; read when a stage asks
            (:meth:`side_features`), with the item map.
    """

    def __init__(
        self,
        path: str | None,
        data_dir: str,
        columns: Mapping[str, str | None],
        min_interactions: PositiveInt,
        split_strategy: Strategy,
        holdout: Holdout,
        valid_ratio: OpenFraction,
        split_seed: NonNegativeInt,
        last_n: PositiveInt,
        random_m: NonNegativeInt,
        view: View,
        max_len: NonNegativeInt,
        batch_size: PositiveInt,
        eval_batch_size: PositiveInt,
        num_workers: NonNegativeInt,
        on_device: Literal["auto", True, False],
        use_cache: bool,
        cache_dir: str,
        item_features: str | None,
    ) -> None:
        super().__init__()
        self.split = SplitSpec(
            split_strategy,
            holdout,
            float(valid_ratio),
            int(split_seed),
            int(last_n),
            int(random_m),
        )
        self.path = path
        self.data_dir = data_dir
        self.columns = {role: columns[role] for role in ROLES}
        self.min_interactions = int(min_interactions)
        self.view = view
        self.max_len = int(max_len)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.on_device = on_device
        self.use_cache = bool(use_cache)
        self.cache_dir = str(Path(cache_dir).expanduser())
        self.item_features = item_features
        self._side: ItemFeatures | None = None
        self.arrays: dict[str, np.ndarray] | None = None
        self.meta: dict[str, Any] = {}
        self.data_md5: str | None = None  # the file's content MD5, when the cache computed it
        self.from_cache = False
        self._views_built = False

    # ---------------------------------------------------------------- preparation
    @property
    def data_path(self) -> Path:
        return data_file(self.path, self.data_dir)

    def split_params(self) -> dict[str, Any]:
        """Every parameter that shapes the prepared arrays (and only those)."""
        return {
            "columns": self.columns,
            "min_interactions": self.min_interactions,
            **self.split.cache_params(),
        }

    def prepare_data(self) -> None:
        self.load()

    def load(self) -> None:
        """Load the prepared arrays from the cache, or build (and cache) them."""
        if self.arrays is not None:
            return
        path = self.data_path
        if path.is_dir():
            raise LightrecError(f"data file {path} is a directory (set data.path to a CSV file)")
        if path.exists() and not path.is_file():
            raise LightrecError(
                f"data file {path} is not a regular file (a pipe or a device, as a shell's "
                "<(...) makes): it is read more than once, so save it to a file first"
            )
        if not path.is_file():
            raise LightrecError(f"data file {path} does not exist (set data.path to a CSV file)")
        if self.use_cache and (why := unwritable(self.cache_dir)):
            warnings.warn(
                f"data_cache.cache_dir {self.cache_dir} cannot be written ({why}): "
                "preparing the data without the cache",
                stacklevel=2,
            )
            self.use_cache = False
        if not self.use_cache:
            self._build(path, key=None)
            return
        read_early: Interactions | None = None
        md5 = cache.remembered_md5(path, self.cache_dir)
        if md5 is None:  # a file not hashed before (a first build): read it while hashing it
            read_early, md5 = in_parallel(
                [
                    lambda: read_interactions(path, self.columns),
                    lambda: cache.file_md5(path, self.cache_dir),
                ]
            )
        self.data_md5 = md5
        key = cache.cache_key(self.split_params(), md5)
        with cache.locked(self.cache_dir):  # one process builds; the others then find it
            cache.remove_leftovers(self.cache_dir)
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
            self._build(path, key, read_early)

    def _build(self, path: Path, key: str | None, read: Interactions | None = None) -> None:
        interactions = read if read is not None else read_interactions(path, self.columns)
        self.arrays, self.meta = encode_and_split(interactions, self.min_interactions, self.split)
        self.meta["data_path"] = str(path)
        self.meta["params"] = self.split_params()
        log.info("prepared %s: %s", path, self.meta["stats"])
        if key is not None:
            try:
                cache.save(self.cache_dir, key, self.arrays, self.meta)
            except (OSError, NoSpace) as e:  # a full disk, say: the run goes on without it
                warnings.warn(
                    f"data_cache.cache_dir {self.cache_dir}: the prepared data was not cached "
                    f"({e}); the run goes on",
                    stacklevel=2,
                )

    # ---------------------------------------------------------------- views
    def setup(self, stage: str | None = None) -> None:
        self.load()
        if self._views_built:
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
        self.train_seq = self.valid_seq = self.test_seq = None
        if self.view == SEQUENCE:
            # what each stage may read: training rows; for test, training and validation rows
            self.train_seq = sequence_matrix(u, i, s == TRAIN, self.num_users, self.max_len)
            self.valid_seq = self.train_seq
            self.test_seq = sequence_matrix(u, i, s != TEST, self.num_users, self.max_len)
        self._views_built = True

    def with_validation_in_training(self) -> RecSysDataModule:
        """A copy whose training rows also hold the validation rows (the refit stage's data:
        every interaction the run may use); test rows stay held out, and stay the test."""
        assert self.arrays is not None
        merged = copy.copy(self)
        split = np.where(self.arrays["split"] == VALID, TRAIN, self.arrays["split"])
        merged.arrays = {**self.arrays, "split": split.astype(self.arrays["split"].dtype)}
        merged._views_built = False
        merged.setup()
        return merged

    @property
    def has_validation(self) -> bool:
        return self.valid_csr.nnz > 0

    @property
    def has_test(self) -> bool:
        return self.test_csr.nnz > 0

    def side_features(self) -> ItemFeatures:
        """The item side information over this data's item map (empty when there is none)."""
        if self._side is None:
            self.load()
            source = feature_source(self.item_features, self.data_path)
            self._side = (
                ItemFeatures()
                if source is None
                else read_item_features(source, self.meta["item_ids"])
            )
        return self._side

    def id_maps(self) -> dict[str, list]:
        return {"user_ids": self.meta["user_ids"], "item_ids": self.meta["item_ids"]}

    def _loader(self, users: np.ndarray, collate: CSRCollate, train: bool) -> DataLoader:
        """Batches of user indices. Under data parallelism each process takes its share:
        for training, Lightning's usual padded shuffle (every process takes the same number
        of steps); for validation and test, every ``world``-th user from its rank on, with
        no padding, so each user is scored exactly once."""
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        sampler: Sampler | None = None
        if world > 1 and trainer is not None:
            if train:
                seed = int(torch.initial_seed()) % 2**31  # the same on every process
                sampler = DistributedSampler(users, world, trainer.global_rank, True, seed)  # type: ignore[arg-type]
            else:
                sampler = Shard(len(users), world, trainer.global_rank)
        return DataLoader(
            users,  # type: ignore[arg-type]  # a numpy array of user indices is a map-style dataset
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            pin_memory=trainer is not None and trainer.strategy.root_device.type == "cuda",
        )

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        users = np.flatnonzero(np.diff(self.train_csr.indptr) > 0)
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if device is not None and self._training_data_fits(device):
            if self.view == SEQUENCE:
                assert self.train_seq is not None
                rows, key = torch.from_numpy(self.train_seq).to(device), "seq"
            else:
                dense = torch.zeros(self.train_csr.shape, dtype=torch.uint8)
                dense[
                    torch.from_numpy(self.train_csr.nonzero()[0]),
                    torch.from_numpy(self.train_csr.indices.astype(np.int64)),
                ] = 1
                rows, key = dense.to(device), "input_dense"
            return DeviceBatches(rows, users, self.batch_size, key)
        collate = train_collate(self.view, self.train_csr, self.train_seq)
        return self._loader(users, collate, train=True)

    def _training_data_fits(self, device: torch.device) -> bool:
        """Whether training batches are built on ``device`` (see ``on_device``)."""
        if self.on_device is False or (self.trainer is not None and self.trainer.world_size > 1):
            return False
        if self.on_device is True:
            return True
        if device.type != "cuda":
            return False
        width = self.max_len * 8 if self.view == SEQUENCE else self.num_items
        need = self.num_users * width
        free = available_bytes(device)
        return free is not None and need <= free // 2  # half: the model needs room too

    def scoring_collate(
        self, stage: Literal["valid", "test"], with_targets: bool = False
    ) -> CSRCollate:
        """Scoring batches of a stage's users from what each may read: for validation the
        training rows, for test the training *and* validation rows (the selected model is
        judged on what follows everything it could have seen); with the stage's held-out
        items as targets when evaluating."""
        if stage == "valid":
            history, targets, seqs = self.train_csr, self.valid_csr, self.valid_seq
        else:
            history = (self.train_csr + self.valid_csr).tocsr()
            targets, seqs = self.test_csr, self.test_seq
        return eval_collate(self.view, history, targets if with_targets else None, seqs)

    def val_dataloader(self) -> DataLoader:
        users = np.flatnonzero(np.diff(self.valid_csr.indptr) > 0)
        return self._loader(users, self.scoring_collate("valid", with_targets=True), train=False)

    def test_dataloader(self) -> DataLoader:
        users = np.flatnonzero(np.diff(self.test_csr.indptr) > 0)
        return self._loader(users, self.scoring_collate("test", with_targets=True), train=False)
