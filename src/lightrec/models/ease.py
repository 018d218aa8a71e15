"""EASE: the closed-form item-item baseline, fit in one call, no epochs.

EASE: Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019,
https://arxiv.org/abs/1905.03375. With the binary user x item matrix X,

    P = (X^T X + lambda I)^-1,    B = I - P diagMat(1 / diag(P))

i.e. ``B_ij = -P_ij / P_jj`` off the diagonal and ``B_jj = 0``: the ridge regression of
every item on all the others, with self-similarity forbidden. Scores are ``x_u B``.

Precision (lightrec.models.item_item.fit_dtype): on the GPU float32 (with TF32 off, so the
inverse is true fp32); on the CPU float64 by default, because the Gram matrix of a popular
catalogue is badly conditioned (diagonal entries from lambda to tens of thousands) and the
inverse loses several digits in float32. ``dtype`` overrides.
Before allocating, the fit checks that its two items x items matrices fit in the memory
free on its device (and under ``memory_budget_gb`` when set).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.data.batches import dense_rows
from lightrec.models.item_item import FitDtype, ItemItemModule, binary, fit_dtype
from lightrec.params import PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


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


def gram_matrix(train: sp.csr_matrix, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``X^T X`` of the binary training matrix, dense in ``dtype`` on ``device`` (the one
    dense copy): scipy's sparse product on the CPU, blocks of dense products on a GPU."""
    x = binary(train, np.float64 if dtype == torch.float64 else np.float32)
    if device.type == "cpu":
        return torch.from_numpy((x.T @ x).toarray())
    return gram_by_row_blocks(x, device).to(dtype)


class EASE(ItemItemModule):
    """Args:
    num_items: filled in from the data module.
    lam: L2 regularisation (lambda); larger for bigger, denser data.
    dtype: ``auto`` (float64 on the CPU, float32 on the GPU), ``float32`` or ``float64``.
    memory_budget_gb: an upper limit of your own for the fit's n x n matrices; None: the
        memory free on the device decides.
    eval_ks: cut-offs of the validation/test metrics.
    exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    def __init__(
        self,
        num_items: PositiveInt,
        lam: PositiveFloat,
        dtype: FitDtype,
        memory_budget_gb: PositiveFloat | None,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen, memory_budget_gb)
        self.save_hyperparameters()
        self.lam = lam
        self.dtype_name = dtype

    def check_fit_memory(self, device: torch.device, dtype: torch.dtype) -> None:
        """Refuse, before allocating, a fit in ``dtype`` that ``device`` cannot hold."""
        # peak: two n x n at a time (the Gram matrix and its Cholesky factor, then the factor
        # and the inverse, which becomes B in place)
        self.check_memory(device, dtype, 2 * self.num_items**2, "its item x item matrices")

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        device = self.B.device
        dtype = fit_dtype(self.dtype_name, device)
        self.check_fit_memory(device, dtype)
        gram = gram_matrix(train, device, dtype)
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            weights = ease_weights(gram, self.lam)
            del gram
            self.set_weights(weights)  # stored and scored in float32, as always
            del weights
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        log.info(
            "EASE fit on %d items, lambda %s, %s on %s", self.num_items, self.lam, dtype, device
        )
