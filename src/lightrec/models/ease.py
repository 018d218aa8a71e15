"""EASE: the closed-form item-item baseline, fit in one call, no epochs.

EASE: Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019,
https://arxiv.org/abs/1905.03375. With the binary user x item matrix X,

    P = (X^T X + lambda I)^-1,    B = I - P diagMat(1 / diag(P))

i.e. ``B_ij = -P_ij / P_jj`` off the diagonal and ``B_jj = 0``: the ridge regression of
every item on all the others, with self-similarity forbidden. Scores are ``x_u B``.

Precision: on the GPU float32 (with TF32 off, so the inverse is true fp32); on the CPU
float64 by default, because the Gram matrix of a popular catalogue is badly conditioned
(diagonal entries from lambda to tens of thousands) and the inverse loses several digits
in float32, while float64 costs only about twice the time there. ``dtype`` overrides.
Before allocating, the fit checks that its two items x items matrices fit in the memory
free on its device (and under ``memory_budget_gb`` when set).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.data.batches import dense_rows
from lightrec.errors import LightrecError
from lightrec.models.base import ClosedFormModule
from lightrec.params import PositiveFloat, PositiveInt
from lightrec.utils.memory import available_bytes

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def ease_memory_gb(num_items: int, dtype: torch.dtype) -> float:
    """Peak memory of the fit: two n x n matrices at a time (the Gram matrix and its Cholesky
    factor, then the factor and the inverse, which becomes B in place; a float64 B's float32
    copy is half of one more)."""
    return 2 * num_items**2 * torch.empty((), dtype=dtype).element_size() / 1e9


def ease_weights(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """``B`` from the Gram matrix ``X^T X`` (consumed: pass it and drop your reference), by a
    Cholesky inverse; at most two n x n matrices are alive at once.

    >>> X = torch.tensor([[1., 1., 0.], [0., 1., 1.], [1., 1., 1.]], dtype=torch.float64)
    >>> B = ease_weights(X.T @ X, lam=1.0)
    >>> torch.diagonal(B).abs().max().item()
    0.0
    """
    gram.diagonal().add_(lam)
    factor = torch.linalg.cholesky(gram)
    del gram
    p = torch.cholesky_inverse(factor)
    del factor
    p.div_(-p.diagonal())  # column j divided by -P_jj (the divisor is a new vector)
    p.diagonal().zero_()
    return p


def gram_by_row_blocks(
    x: sp.csr_matrix, device: torch.device, rows: int | None = None
) -> torch.Tensor:
    """``X^T X`` (items x items, float32) of a binary user x item matrix, as a sum of dense
    products of blocks of ``rows`` users built on ``device`` (by default blocks of about a
    GB). Exact: the entries are co-occurrence counts, 0 and 1 are exact in TF32 and the
    products accumulate in float32, exact below 2^24 users. cuSPARSE's SpGEMM, used before,
    ran out of resources at MovieLens-20M's size (20M rows, 26,744 items) on an H200.

    >>> x = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=np.float32))
    >>> gram_by_row_blocks(x, torch.device("cpu"), rows=2).int().tolist()
    [[2, 1, 1], [1, 2, 1], [1, 1, 2]]
    """
    n_users, n_items = x.shape
    rows = rows or max(1, 2**28 // max(n_items, 1))
    gram = torch.zeros(n_items, n_items, dtype=torch.float32, device=device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # exact here (see above), and fast
    try:
        for start in range(0, n_users, rows):
            block = x[start : start + rows]
            dense = dense_rows(
                torch.from_numpy(block.indptr.astype(np.int64)).to(device),
                torch.from_numpy(block.indices.astype(np.int64)).to(device),
                n_items,
            )  # (rows, I)
            gram.addmm_(dense.t(), dense)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return gram


class EASE(ClosedFormModule):
    """Args:
    num_items: filled in from the data module.
    lam: L2 regularisation (lambda); larger for bigger, denser data.
    dtype: ``auto`` (float64 on the CPU, float32 on the GPU), ``float32`` or ``float64``.
    memory_budget_gb: an upper limit of your own for the fit's n x n matrices; None: the
        memory free on the device decides.
    eval_ks: cut-offs of the validation/test metrics.
    exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    B: torch.Tensor

    def __init__(
        self,
        num_items: PositiveInt,
        lam: PositiveFloat,
        dtype: Literal["auto", "float32", "float64"],
        memory_budget_gb: PositiveFloat | None,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen)
        self.save_hyperparameters()
        self.lam = lam
        self.dtype_name = dtype
        self.memory_budget_gb = memory_budget_gb
        # B is made by the fit (or by loading a checkpoint): no n x n zeros beside it
        self.register_buffer("B", torch.zeros(0, 0))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kw: Any) -> None:
        weights = state_dict.get(prefix + "B")
        if weights is not None and weights.shape != self.B.shape:
            self.B = torch.empty_like(weights, device=self.B.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)

    def check_memory(self, device: torch.device, dtype: torch.dtype) -> None:
        """Refuse, before allocating, a fit the device cannot hold: the memory free there
        (a GPU's free memory, the host's available RAM), or model.memory_budget_gb if set."""
        need = ease_memory_gb(self.num_items, dtype)
        free = available_bytes(device)
        limits = []
        if free is not None:
            limits.append((free / 1e9, f"{free / 1e9:.1f} GB free on the {device.type.upper()}"))
        if self.memory_budget_gb is not None:
            limits.append(
                (self.memory_budget_gb, f"model.memory_budget_gb={self.memory_budget_gb}")
            )
        for limit, what in limits:
            if need > limit:
                smaller = " use model.dtype=float32," if dtype == torch.float64 else ""
                raise LightrecError(
                    f"EASE on {self.num_items:,} items needs about {need:.1f} GB for its item x "
                    f"item matrices ({str(dtype).removeprefix('torch.')}), over {what}:{smaller}"
                    " drop rare items (data.min_interactions), or use a bigger device"
                )

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        device = self.B.device
        dtype = DTYPES.get(
            self.dtype_name, torch.float64 if device.type == "cpu" else torch.float32
        )
        self.check_memory(device, dtype)
        x = train.astype(np.float64 if dtype == torch.float64 else np.float32)
        x.data[:] = 1.0
        if device.type == "cpu":
            gram = torch.from_numpy((x.T @ x).toarray())  # the one dense copy, in its dtype
        else:
            gram = gram_by_row_blocks(x, device).to(dtype)
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            weights = ease_weights(gram, self.lam)
            del gram
            self.B = weights.to(torch.float32)  # stored and scored in float32, as always
            del weights
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        log.info(
            "EASE fit on %d items, lambda %s, %s on %s", self.num_items, self.lam, dtype, device
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.B  # (B, I)
