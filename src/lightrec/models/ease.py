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
On the CPU the fit lives in one items x items matrix (the Gram matrix, inverted in place by
torch's LAPACK), plus B's float32 copy; on a GPU in two. Before allocating, the fit checks
that they fit in the memory free on its device (and under ``memory_budget_gb`` when set).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.data.batches import dense_rows
from lightrec.errors import LightrecError
from lightrec.models.item_item import FitDtype, ItemItemModule, binary, fit_dtype
from lightrec.params import PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


def ease_weights(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """``B`` from the Gram matrix ``X^T X`` (consumed: pass it and drop your reference).
    On the CPU the whole fit happens in ``gram``'s own memory (one n x n matrix alive); on a
    GPU a Cholesky factor sits beside it (two).

    >>> X = torch.tensor([[1., 1., 0.], [0., 1., 1.], [1., 1., 1.]], dtype=torch.float64)
    >>> B = ease_weights(X.T @ X, lam=1.0)
    >>> torch.diagonal(B).abs().max().item()
    0.0
    """
    gram.diagonal().add_(lam)
    p = spd_inverse_(gram)
    del gram
    p.div_(-p.diagonal())  # column j divided by -P_jj (the divisor is a new vector)
    p.diagonal().zero_()
    return p


def spd_inverse_(a: torch.Tensor) -> torch.Tensor:
    """The inverse of the symmetric positive definite ``a``, by its Cholesky factor: on the
    CPU in ``a``'s own memory, elsewhere in new memory.

    In place: a C-ordered symmetric matrix is its own column-major transpose, which is the
    layout LAPACK works in, so torch factors and inverts that view without a copy (torch's
    LAPACK, not scipy's: scipy's OpenBLAS build crashed factoring 17,000 x 17,000 on two
    threads).

    >>> a = torch.tensor([[4.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
    >>> inv = spd_inverse_(a.clone())
    >>> (inv @ a).round(decimals=12).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    if a.device.type != "cpu":
        return torch.cholesky_inverse(torch.linalg.cholesky(a))
    a = a.contiguous()
    view = a.mT
    info = torch.empty((), dtype=torch.int32)
    torch.linalg.cholesky_ex(view, out=(view, info))
    if int(info) != 0:
        raise LightrecError(
            f"the {str(a.dtype).removeprefix('torch.')} Gram matrix is not positive definite "
            f"(its leading minor of order {int(info)} is not): use model.dtype=float64 or a "
            "larger model.lam"
        )
    torch.cholesky_inverse(view, out=view)  # the whole symmetric inverse
    return a


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
    dense copy): on the CPU scipy's sparse products, a block of item rows at a time written
    into the dense result (the whole sparse product of a long-tailed catalogue can be
    larger than the dense matrix); blocks of dense products on a GPU.

    >>> x = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=np.float32))
    >>> gram_matrix(x, torch.device("cpu"), torch.float64).int().tolist()
    [[2, 1, 1], [1, 2, 1], [1, 1, 2]]
    """
    x = binary(train, np.float64 if dtype == torch.float64 else np.float32)
    if device.type != "cpu":
        return gram_by_row_blocks(x, device).to(dtype)
    n = x.shape[1]
    xt = x.T.tocsr()
    gram = np.empty((n, n), dtype=x.dtype)
    step = max(1, 2**24 // max(n, 1))  # about 16M entries per block
    for start in range(0, n, step):
        gram[start : start + step] = (xt[start : start + step] @ x).toarray()
    return torch.from_numpy(gram)


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

    OPEN_ENDED = ("lam",)  # a grid whose best is its edge looks past it

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
        # peak: on the CPU the one n x n the fit happens in, and B's float32 copy when the fit
        # is float64; on a GPU two n x n (the Gram matrix and its Cholesky factor, then the
        # factor and the inverse, which becomes B in place)
        n2 = self.num_items**2
        copy = 0.5 * n2 if dtype == torch.float64 else 0
        elements = int(n2 + copy) if device.type == "cpu" else 2 * n2
        self.check_memory(device, dtype, elements, "its item x item matrices")

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        device = self.B.device
        dtype = fit_dtype(self.dtype_name, device)
        self.check_fit_memory(device, dtype)
        gram = gram_matrix(train, device, dtype)
        with no_tf32():
            weights = ease_weights(gram, self.lam)
            del gram
            self.set_weights(weights)  # stored and scored in float32, as always
            del weights
        log.info(
            "EASE fit on %d items, lambda %s, %s on %s", self.num_items, self.lam, dtype, device
        )

    def tuning_state(self, train: sp.csr_matrix) -> torch.Tensor:
        """The float32 Gram matrix (exact: co-occurrence counts), computed once for every
        lambda of the grid. With a candidate's matrix beside it, two float32 n x n: no more
        than the final fit's float64 matrix (and its float32 copy) on the CPU."""
        device = self.B.device
        matrices = 2 if device.type == "cpu" else 4  # a GPU's factor and inverse are new
        self.check_memory(device, torch.float32, matrices * self.num_items**2, "its tuning")
        return gram_matrix(train, device, torch.float32)

    def fit_candidate(self, train: sp.csr_matrix, shared: torch.Tensor | None) -> None:
        """A lambda of the grid, in float32 from the shared Gram matrix: choosing compares
        candidates, where float32's digits are enough (the final fit keeps ``dtype``); a
        Gram matrix float32 cannot factor is done in float64 instead."""
        if shared is None:
            self.fit_closed_form(train)
            return
        with no_tf32():
            try:
                weights = ease_weights(shared.clone(), self.lam)
            except LightrecError:  # not positive definite in float32's digits
                weights = ease_weights(shared.double(), self.lam)
            self.set_weights(weights)  # float32 already: B is the candidate's one matrix
            del weights


@contextmanager
def no_tf32() -> Iterator[None]:
    """Within: CUDA matrix products in true float32 (an inverse needs its digits)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
