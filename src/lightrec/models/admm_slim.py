"""ADMM-SLIM: Steck, Dimakopoulou, Riabov, Jebara, "ADMM SLIM: Sparse Recommendations for
Many Users", WSDM 2020. SLIM's objective, solved by ADMM on the item x item Gram matrix:

    min_B 1/2 ||X - X B||^2 + lambda_1 ||B||_1 + lambda_2/2 ||B||^2   s.t. diag(B) = 0 [, B >= 0]

With ``G = X^T X`` and ``P = (G + (lambda_2 + rho) I)^-1`` each iteration is

    B~ = P G + P (rho C - Gamma);  B = B~ - P diagMat(diag(B~) / diag(P))   (diag(B) = 0)
    C = soft_threshold(B + Gamma / rho, lambda_1 / rho)  [then max(C, 0)]
    Gamma += rho (B - C)

and ``C`` (sparse, and non-negative when ``positive``) is the model. With ``lambda_1 = 0``
and no sign constraint the solution is EASE's with ``lambda = lambda_2``.

The shipped config fits in float32 (``rho`` keeps the inverted matrix well conditioned);
every update is in place, so six n x n matrices are alive at the peak, which the memory
check counts before allocating; the iterations stop early once B and C agree.
"""

from __future__ import annotations

import logging

import scipy.sparse as sp
import torch

from lightrec.models.ease import gram_matrix
from lightrec.models.item_item import FitDtype, ItemItemModule, fit_dtype
from lightrec.params import NonNegativeFloat, PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


LIVE_MATRICES = 7  # n x n matrices at the fit's peak: six, the inverse's workspace (6.6 measured)
TOLERANCE = 1e-5  # the iterations stop once B - C and C's last move are under this of C
SHRINK_ROWS = 1024  # rows soft-thresholded at once (positive=false), in place


def admm_slim_weights(
    gram: torch.Tensor, l1: float, l2: float, rho: float, iterations: int, positive: bool
) -> tuple[torch.Tensor, int]:
    """The ADMM-SLIM matrix from the Gram matrix ``X^T X`` (consumed), and the iterations
    it took: at most ``iterations``, fewer once B and C agree and C stands still (the
    primal residual and C's last move under :data:`TOLERANCE` of C). Every update is in
    place, in one work matrix: six n x n matrices at the peak (P, P G, Gamma, C, B and the
    work matrix), which :data:`LIVE_MATRICES` says to the memory check."""
    n = gram.shape[0]
    gram.diagonal().add_(l2 + rho)  # G + (lambda_2 + rho) I, in place ...
    p = torch.linalg.inv(gram)
    gram.diagonal().sub_(l2 + rho)  # ... and G again
    b_aux = p @ gram  # P G
    del gram
    p_diag = p.diagonal().clone()
    gamma = torch.zeros_like(p)
    c = torch.zeros_like(p)
    b = torch.empty_like(p)
    work = torch.empty_like(p)
    threshold = l1 / rho
    done = 0
    while done < iterations:
        done += 1
        torch.mul(c, rho, out=work).sub_(gamma)  # rho C - Gamma
        torch.matmul(p, work, out=b).add_(b_aux)  # B~ = P G + P (rho C - Gamma)
        torch.mul(p, (b.diagonal() / p_diag)[None, :], out=work)
        b.sub_(work)  # column j: diag(B) = 0
        work.copy_(c)  # the previous C
        torch.div(gamma, rho, out=c).add_(b)  # B + Gamma / rho, then the soft threshold:
        if positive:  # with C >= 0 it is max(C - t, 0)
            c.sub_(threshold).clamp_(min=0.0)
        else:  # by blocks of rows: a whole-matrix softshrink would be an eighth n x n
            for start in range(0, n, SHRINK_ROWS):
                rows = c[start : start + SHRINK_ROWS]
                rows.copy_(torch.nn.functional.softshrink(rows, threshold))
        change = float(work.sub_(c).norm())  # how far C moved (the dual residual)
        torch.sub(b, c, out=work)  # the primal residual B - C
        gamma.add_(work, alpha=rho)
        scale = TOLERANCE * max(float(c.norm()), 1e-12)
        if float(work.norm()) <= scale and change <= scale:
            break
    del b, work, gamma, p, b_aux
    assert n == c.shape[0]
    return c, done


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

    OPEN_ENDED = ("l2",)  # a grid whose best is its edge looks past it

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
        self.check_memory(
            device, dtype, LIVE_MATRICES * self.num_items**2, "its item x item matrices"
        )
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            weights, done = admm_slim_weights(  # the Gram matrix's one reference: consumed
                gram_matrix(train, device, dtype),
                self.l1,
                self.l2,
                self.rho,
                self.iterations,
                self.positive,
            )
            self.set_weights(weights)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        log.info(
            "ADMM-SLIM fit on %d items (l1 %s, l2 %s, rho %s, %d of %d iterations), %s on %s",
            self.num_items,
            self.l1,
            self.l2,
            self.rho,
            done,
            self.iterations,
            dtype,
            device,
        )
