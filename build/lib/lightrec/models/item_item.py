"""What the item x item models share (EASE, ADMM-SLIM, ItemKNN, RP3beta): a closed-form fit
that makes one matrix ``B`` (items x items), and scores ``x_u B`` for a user's history row.

``B`` is stored and scored in float32. It is made by the fit or read from a checkpoint, so
a model built for loading holds no n x n zeros; before a fit allocates its matrices it
checks they fit in the memory free on its device (and under ``memory_budget_gb``).

A user's history is binary, so ``x_u B`` is the sum of B's rows of the items the user has:
batches that carry CSR histories are scored that way (``embedding_bag``), in
``nnz x I`` operations instead of the dense product's ``B x I x I`` (a thousandth of them on
a 23k-item catalogue where users hold about ten items each).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lightrec.data.batches import history_rows
from lightrec.errors import LightrecError
from lightrec.models.base import ClosedFormModule
from lightrec.utils.memory import available_bytes

FitDtype = Literal["auto", "float32", "float64"]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def fit_dtype(name: str, device: torch.device) -> torch.dtype:
    """A closed-form fit's precision: ``name``, where ``auto`` is float64 on the CPU (a
    popular catalogue's Gram matrix is badly conditioned and float64 costs only about twice
    the time there) and float32 on a GPU.

    >>> fit_dtype("auto", torch.device("cpu")), fit_dtype("float32", torch.device("cpu"))
    (torch.float64, torch.float32)
    """
    return DTYPES.get(name, torch.float64 if device.type == "cpu" else torch.float32)


class ItemItemModule(ClosedFormModule):
    """A :class:`ClosedFormModule` whose scores are ``x @ B``."""

    B: torch.Tensor

    def __init__(
        self,
        num_items: int,
        eval_ks: list[int],
        exclude_seen: bool,
        memory_budget_gb: float | None = None,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen)
        self.memory_budget_gb = memory_budget_gb
        self.register_buffer("B", torch.zeros(0, 0))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kw: Any) -> None:
        # every buffer the fit makes (B, and a subclass's own) takes the checkpoint's shape
        for name, buffer in list(self.named_buffers(recurse=False)):
            weights = state_dict.get(prefix + name)
            if weights is not None and weights.shape != buffer.shape:
                # contiguous, whatever the saved tensor's strides (see set_weights)
                setattr(self, name, weights.new_empty(weights.shape, device=buffer.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)

    def release_weights(self) -> bool:
        for name, buffer in list(self.named_buffers(recurse=False)):
            setattr(self, name, buffer.new_zeros((0,) * buffer.dim()))
        return True

    def check_memory(
        self, device: torch.device, dtype: torch.dtype, elements: int, what: str, hint: str = ""
    ) -> None:
        """Refuse, before allocating, a fit whose matrices (``what``) hold ``elements``
        numbers of ``dtype``, beyond the memory free on ``device`` or beyond
        ``memory_budget_gb``; ``hint`` adds what else to try."""
        need_gb = elements * torch.empty((), dtype=dtype).element_size() / 1e9
        if dtype == torch.float64:
            hint = " use model.dtype=float32," + hint
        free = available_bytes(device)
        limits = []
        if free is not None:
            limits.append((free / 1e9, f"{free / 1e9:.1f} GB free on the {device.type.upper()}"))
        if self.memory_budget_gb is not None:
            limits.append(
                (self.memory_budget_gb, f"model.memory_budget_gb={self.memory_budget_gb}")
            )
        for limit, where in limits:
            if need_gb > limit:
                raise LightrecError(
                    f"{type(self).__name__} on {self.num_items:,} items needs about "
                    f"{need_gb:.1f} GB for {what} ({str(dtype).removeprefix('torch.')}), "
                    f"over {where}:{hint} remove rare items from the data file (no key drops "
                    "items; data.min_interactions drops users), or use a "
                    "bigger device"
                )

    def set_weights(self, weights: np.ndarray | torch.Tensor) -> None:
        """Keep ``weights`` as ``B`` (float32, contiguous, on this module's device). A
        column-major B (scipy's dense copy of a CSC product is one) sends ``embedding_bag``
        down a one-thread path per row: ItemKNN's validation at the competition's size took
        minutes instead of seconds."""
        w = torch.as_tensor(weights)
        self.B = w.to(device=self.B.device, dtype=torch.float32).contiguous()

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.B  # (B, I)

    def history_scores(
        self, indptr: torch.Tensor, indices: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """``scores(x)`` of the binary rows ``x`` (B, I) that the CSR slice ``indptr``,
        ``indices`` holds, from the slice: the sum of B's rows of each user's items."""
        return F.embedding_bag(indices, self.B, indptr, mode="sum", include_last_offset=True)

    def score_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = history_rows(batch, self.num_items)
        if "input_indptr" not in batch:  # dense rows (a device-resident matrix, an export)
            return self.scores(x), x
        return self.history_scores(batch["input_indptr"], batch["input_indices"], x), x


def binary(train: sp.csr_matrix, dtype: type = np.float32) -> sp.csr_matrix:
    """The training matrix with every stored entry 1 (a repeat is one interaction)."""
    x = train.astype(dtype)
    x.data[:] = 1.0
    return x


def keep_top_k(w: np.ndarray, k: int, axis: int) -> np.ndarray:
    """``w`` with all but the ``k`` largest entries of each row (``axis=1``) or column
    (``axis=0``) set to 0, in place; ``k >= n`` keeps everything.

    >>> keep_top_k(np.array([[3.0, 1.0, 2.0], [0.5, 4.0, 1.0]]), 2, axis=1).tolist()
    [[3.0, 0.0, 2.0], [0.0, 4.0, 1.0]]
    """
    n = w.shape[axis]
    if k >= n:
        return w
    drop = np.argpartition(w, n - k, axis=axis)
    if axis == 1:
        np.put_along_axis(w, drop[:, : n - k], 0.0, axis=1)
    else:
        np.put_along_axis(w, drop[: n - k, :], 0.0, axis=0)
    return w
