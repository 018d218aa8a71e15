"""ADMM-SLIM: Steck, Dimakopoulou, Riabov, Jebara, "ADMM SLIM: Sparse Recommendations for
Many Users", WSDM 2020. SLIM's objective, solved by ADMM on the item x item Gram matrix:

    min_B 1/2 ||X - X B||^2 + lambda_1 ||B||_1 + lambda_2/2 ||B||^2   s.t. diag(B) = 0 [, B >= 0]

With ``G = X^T X`` and ``P = (G + (lambda_2 + rho) I)^-1`` each iteration is

    B~ = P G + P (rho C - Gamma);  B = B~ - P diagMat(diag(B~) / diag(P))   (diag(B) = 0)
    C = soft_threshold(B + Gamma / rho, lambda_1 / rho)  [then max(C, 0)]
    Gamma += rho (B - C)

and ``C`` (sparse, and non-negative when ``positive``) is the model. With ``lambda_1 = 0``
and no sign constraint the solution is EASE's with ``lambda = lambda_2``.

Precision as EASE's: float64 on the CPU and float32 on a GPU by default; five n x n matrices
are alive during the iterations, which the memory check counts before allocating.
"""

from __future__ import annotations

import logging

import scipy.sparse as sp
import torch

from lightrec.models.ease import gram_matrix
from lightrec.models.item_item import FitDtype, ItemItemModule, fit_dtype
from lightrec.params import NonNegativeFloat, PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


def admm_slim_weights(
    gram: torch.Tensor, l1: float, l2: float, rho: float, iterations: int, positive: bool
) -> torch.Tensor:
    """The ADMM-SLIM matrix from the Gram matrix ``X^T X`` (consumed)."""
    n = gram.shape[0]
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    p = torch.linalg.inv(gram + (l2 + rho) * eye)
    del eye
    b_aux = p @ gram
    del gram
    p_diag = p.diagonal().clone()
    gamma = torch.zeros_like(p)
    c = torch.zeros_like(p)
    for _ in range(iterations):
        b = b_aux + p @ (rho * c - gamma)
        b -= p * (b.diagonal() / p_diag)[None, :]  # column j: diag(B) = 0
        c = b + gamma / rho
        c = c.sign() * (c.abs() - l1 / rho).clamp(min=0.0)  # soft threshold
        if positive:
            c.clamp_(min=0.0)
        gamma += rho * (b - c)
        del b
    return c


class ADMMSLIM(ItemItemModule):
    """Args:
    num_items: filled in from the data module.
    l1: lambda_1, the L1 penalty (sparsity).
    l2: lambda_2, the L2 penalty (as EASE's lambda).
    rho: ADMM's penalty parameter (the paper's values: 1e3 to 1e5).
    iterations: ADMM iterations (the paper reports convergence within 50).
    positive: constrain the weights to be non-negative.
    dtype: ``auto`` (float64 on the CPU, float32 on the GPU), ``float32`` or ``float64``.
    memory_budget_gb: an upper limit of your own for the fit's n x n matrices.
    eval_ks: cut-offs of the validation/test metrics.
    exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    def __init__(
        self,
        num_items: PositiveInt,
        l1: NonNegativeFloat,
        l2: PositiveFloat,
        rho: PositiveFloat,
        iterations: PositiveInt,
        positive: bool,
        dtype: FitDtype,
        memory_budget_gb: PositiveFloat | None,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen, memory_budget_gb)
        self.save_hyperparameters()
        self.l1, self.l2, self.rho = l1, l2, rho
        self.iterations, self.positive, self.dtype_name = iterations, positive, dtype

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        device = self.B.device
        dtype = fit_dtype(self.dtype_name, device)
        self.check_memory(device, dtype, 6 * self.num_items**2, "its item x item matrices")
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            gram = gram_matrix(train, device, dtype)
            weights = admm_slim_weights(
                gram, self.l1, self.l2, self.rho, self.iterations, self.positive
            )
            del gram
            self.set_weights(weights)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        log.info(
            "ADMM-SLIM fit on %d items (l1 %s, l2 %s, rho %s, %d iterations), %s on %s",
            self.num_items,
            self.l1,
            self.l2,
            self.rho,
            self.iterations,
            dtype,
            device,
        )
