"""Batches that stay small on the host: user ids and CSR slices, densified on the device."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Sampler

# The data views a model can read (a model class declares its own: ``data_view``):
# csr: user x item rows (the autoencoders, EASE); sequence: each user's most recent items as
# left-padded tokens of lightrec.data.sequences (the sequence models).
View = Literal["csr", "sequence"]
VIEWS: tuple[str, ...] = get_args(View)
SEQUENCE: View = "sequence"


def csr_from_sorted(
    user: np.ndarray, item: np.ndarray, mask: np.ndarray, n_users: int, n_items: int
) -> sp.csr_matrix:
    """CSR matrix of the rows ``mask`` selects, for ``user`` sorted ascending (no re-sort).

    >>> m = csr_from_sorted(np.array([0, 0, 2]), np.array([1, 0, 2]),
    ...                     np.array([True, True, False]), 3, 3)
    >>> m.toarray().astype(int).tolist()
    [[1, 1, 0], [0, 0, 0], [0, 0, 0]]
    """
    counts = np.bincount(user[mask], minlength=n_users)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = item[mask].astype(np.int32, copy=False)
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(n_users, n_items))


class CSRCollate:
    """Collate user ids into ``{"users", "input_indptr", "input_indices"[, "target_*"]}``.

    Only row slices of the CSR matrices travel; the model densifies them on its device.
    """

    def __init__(self, inputs: sp.csr_matrix | None, targets: sp.csr_matrix | None = None) -> None:
        self.inputs = inputs
        self.targets = targets

    def __call__(self, users: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(users, dtype=np.int64)
        batch = {"users": torch.from_numpy(rows)}
        if self.inputs is not None:
            batch.update(_slice("input", self.inputs, rows))
        if self.targets is not None:
            batch.update(_slice("target", self.targets, rows))
        return batch


def _slice(name: str, m: sp.csr_matrix, rows: np.ndarray) -> dict[str, torch.Tensor]:
    sub = m[rows]
    return {
        f"{name}_indptr": torch.from_numpy(sub.indptr.astype(np.int64)),
        f"{name}_indices": torch.from_numpy(sub.indices.astype(np.int64)),
    }


def history_rows(batch: dict[str, torch.Tensor], n_cols: int) -> torch.Tensor:
    """The batch's users' histories as a binary ``(B, n_cols)`` float matrix on the batch's
    device: rows of a device-resident matrix (:class:`DeviceBatches`) or a CSR slice."""
    if "input_dense" in batch:
        return batch["input_dense"].float()
    return dense_rows(batch["input_indptr"], batch["input_indices"], n_cols)


def dense_rows(indptr: torch.Tensor, indices: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Binary ``(B, n_cols)`` float matrix from a CSR slice, built on the tensors' device.

    >>> dense_rows(torch.tensor([0, 2, 2, 3]), torch.tensor([0, 3, 1]), 4).tolist()
    [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]
    """
    n_rows = indptr.numel() - 1
    counts = indptr[1:] - indptr[:-1]
    rows = torch.repeat_interleave(
        torch.arange(n_rows, device=indptr.device), counts, output_size=indices.numel()
    )
    x = torch.zeros(n_rows, n_cols, device=indptr.device)
    x[rows, indices] = 1.0
    return x


class SequenceCollate(CSRCollate):
    """The users' rows of a sequence matrix, plus CSR slices of the history to exclude and
    the targets when evaluating (training batches carry the sequences alone)."""

    def __init__(
        self,
        seqs: np.ndarray,
        inputs: sp.csr_matrix | None = None,
        targets: sp.csr_matrix | None = None,
    ) -> None:
        super().__init__(inputs, targets)
        self.seqs = seqs

    def __call__(self, users: list[int]) -> dict[str, torch.Tensor]:
        batch = super().__call__(users)
        batch["seq"] = torch.from_numpy(self.seqs[np.asarray(users, dtype=np.int64)])
        return batch


def train_collate(view: View, train: sp.csr_matrix, seqs: np.ndarray | None) -> CSRCollate:
    """Training batches of a view: CSR rows, or the sequences alone."""
    if view == SEQUENCE:
        assert seqs is not None
        return SequenceCollate(seqs)
    return CSRCollate(train)


def eval_collate(
    view: View, history: sp.csr_matrix, targets: sp.csr_matrix | None, seqs: np.ndarray | None
) -> CSRCollate:
    """Scoring batches of a view: the history to score from and to exclude, the targets
    when evaluating, and the history as sequences for the sequence view."""
    if view == SEQUENCE:
        assert seqs is not None
        return SequenceCollate(seqs, history, targets)
    return CSRCollate(history, targets)


class DeviceBatches:
    """Training batches built on the device from a device-resident copy of the training data:
    a binary users x items matrix (uint8) for the CSR view, the token matrix for the
    sequence view. No step copies anything from the host or waits for the device.

    Each epoch draws from torch's random generator exactly what a shuffling ``DataLoader``
    of the same users draws (its base seed, then its sampler's seed for a private
    permutation), so on the same device both paths train identically.
    """

    def __init__(self, rows: torch.Tensor, users: np.ndarray, batch_size: int, key: str) -> None:
        self.rows = rows  # (all users, width) on the device
        self.users = torch.from_numpy(users).to(rows.device)
        self.batch_size = batch_size
        self.key = key  # "input_dense" or "seq"

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        torch.empty((), dtype=torch.int64).random_()  # what the DataLoader's iterator draws
        seed = int(torch.empty((), dtype=torch.int64).random_().item())  # ...and its sampler
        generator = torch.Generator()
        generator.manual_seed(seed)
        order = self.users[
            torch.randperm(len(self.users), generator=generator).to(self.users.device)
        ]
        for start in range(0, len(order), self.batch_size):
            users = order[start : start + self.batch_size]
            yield {"users": users, self.key: self.rows.index_select(0, users)}


class Shard(Sampler[int]):
    """Positions ``rank, rank + world, ...`` of ``n``: one process's share, without the
    padding duplicates of ``DistributedSampler`` (evaluation counts each user once).

    >>> list(Shard(5, world=2, rank=1))
    [1, 3]
    """

    def __init__(self, n: int, world: int, rank: int) -> None:
        self.n, self.world, self.rank = n, world, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))
