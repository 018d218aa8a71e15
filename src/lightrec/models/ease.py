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
The items x items matrices are checked against ``memory_budget_gb`` before allocation.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.errors import LightrecError
from lightrec.models.base import ClosedFormModule
from lightrec.params import PositiveFloat, PositiveInt

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def ease_memory_gb(num_items: int, dtype: torch.dtype) -> float:
    """Peak memory of the fit: Gram matrix, its inverse and B (three n x n matrices)."""
    return 3 * num_items**2 * torch.empty((), dtype=dtype).element_size() / 1e9


def ease_weights(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """``B`` from the Gram matrix ``X^T X`` (overwritten), by a Cholesky inverse.

    >>> X = torch.tensor([[1., 1., 0.], [0., 1., 1.], [1., 1., 1.]], dtype=torch.float64)
    >>> B = ease_weights(X.T @ X, lam=1.0)
    >>> torch.diagonal(B).abs().max().item()
    0.0
    """
    gram.diagonal().add_(lam)
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    b = p / (-p.diagonal())  # column j divided by -P_jj
    b.diagonal().zero_()
    return b


class EASE(ClosedFormModule):
    """Args:
    num_items: filled in from the data module.
    lam: L2 regularisation (lambda); larger for bigger, denser data.
    dtype: ``auto`` (float64 on the CPU, float32 on the GPU), ``float32`` or ``float64``.
    memory_budget_gb: refuse to fit when the n x n matrices would need more.
    eval_ks: cut-offs of the validation/test metrics.
    exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    B: torch.Tensor

    def __init__(
        self,
        num_items: PositiveInt,
        lam: PositiveFloat,
        dtype: Literal["auto", "float32", "float64"],
        memory_budget_gb: PositiveFloat,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen)
        if dtype not in ("auto", *DTYPES):
            raise LightrecError(f"model.dtype={dtype!r} is not one of auto, float32, float64")
        need = ease_memory_gb(num_items, torch.float64 if dtype != "float32" else torch.float32)
        if need > memory_budget_gb:
            raise LightrecError(
                f"EASE on {num_items:,} items needs about {need:.1f} GB for its item x item "
                f"matrices, over model.memory_budget_gb={memory_budget_gb}; raise the budget, "
                "use model.dtype=float32, or drop rare items (data.min_interactions)"
            )
        self.save_hyperparameters()
        self.lam = lam
        self.dtype_name = dtype
        self.register_buffer("B", torch.zeros(num_items, num_items))

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        device = self.B.device
        dtype = DTYPES.get(
            self.dtype_name, torch.float64 if device.type == "cpu" else torch.float32
        )
        x = train.copy()
        x.data[:] = 1.0
        if device.type == "cpu":
            gram = torch.from_numpy((x.T @ x).toarray().astype(np.float64)).to(dtype)
        else:
            coo = x.tocoo()
            xt = torch.sparse_coo_tensor(
                torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64)),
                torch.ones(coo.nnz),
                x.shape,
                device=device,
            ).coalesce()
            gram = torch.sparse.mm(xt.t(), xt).to_dense().to(dtype)
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            self.B.copy_(ease_weights(gram, self.lam))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        log.info(
            "EASE fit on %d items, lambda %s, %s on %s", self.num_items, self.lam, dtype, device
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.B  # (B, I)
