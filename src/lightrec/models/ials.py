"""iALS: implicit-feedback matrix factorisation (Hu, Koren & Volinsky, ICDM 2008), fit by
the ``implicit`` library's alternating least squares, scored as an item x item model.

The fit: ``implicit``'s ``AlternatingLeastSquares`` on the binary training matrix (its
``factors``, ``regularization``, ``alpha``, ``iterations``; seeded by the run's seed) gives
item factors ``Y`` (items x factors). A user's vector is then folded in from their history
by a ridge regression on ``Y`` (``u = (Y^T Y + fold_in I)^-1 Y^T x_u``), so the scores are
``x_u B`` with

    B = Y (Y^T Y + fold_in I)^-1 Y^T        (diagonal set to 0)

a rank-``factors`` item x item matrix: every history scores the same way, a known user's
or one posted to the server, and the model is served, blended and exported like EASE. On
MovieLens-100K (last item + 4 random hidden, validation of the training rows) this fold-in
scored Recall@10 0.253 against 0.245 for the library's own user factors (docs/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.models.item_item import ItemItemModule, binary
from lightrec.params import NonNegativeFloat, PositiveFloat, PositiveInt

log = logging.getLogger(__name__)

# the last ALS fit's item factors, by (training matrix, settings, seed): a tuning grid over
# ``fold_in`` alone refits nothing
_last_fit: dict[tuple, np.ndarray] = {}


def als_item_factors(
    x: sp.csr_matrix, factors: int, regularization: float, alpha: float, iterations: int, seed: int
) -> np.ndarray:
    """``implicit``'s ALS item factors (items x factors, float32) of the binary ``x``."""
    digest = hashlib.md5(x.indptr.tobytes() + x.indices.tobytes()).hexdigest()
    key = (digest, x.shape, factors, regularization, alpha, iterations, seed)
    if key in _last_fit:
        return _last_fit[key]
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's own threads; BLAS's would oversubscribe
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
        )
        model.fit(x, show_progress=False)
    y = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    _last_fit.clear()
    _last_fit[key] = y
    return y


def fold_in_weights(y: np.ndarray, fold_in: float) -> np.ndarray:
    """``B = Y (Y^T Y + fold_in I)^-1 Y^T`` with a zero diagonal (float32, items x items).

    >>> y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    >>> fold_in_weights(y, 1.0).round(3).tolist()
    [[0.0, -0.125, 0.25], [-0.125, 0.0, 0.25], [0.25, 0.25, 0.0]]
    """
    y64 = y.astype(np.float64)
    inner = y64.T @ y64
    inner[np.diag_indices_from(inner)] += fold_in
    right = np.linalg.solve(inner, y64.T).astype(np.float32)  # (factors, items)
    b = y @ right
    np.fill_diagonal(b, 0.0)
    return b


class IALS(ItemItemModule):
    """Args:
    num_items: filled in from the data module.
    factors: the factors' dimension.
    regularization: ALS's L2 penalty.
    alpha: the confidence given to an observed interaction.
    iterations: ALS sweeps.
    fold_in: the ridge penalty of a user's vector folded in from their history.
    memory_budget_gb: an upper limit of your own for B (items x items, float32).
    eval_ks: cut-offs of the validation/test metrics.
    exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    def __init__(
        self,
        num_items: PositiveInt,
        factors: PositiveInt,
        regularization: NonNegativeFloat,
        alpha: PositiveFloat,
        iterations: PositiveInt,
        fold_in: PositiveFloat,
        memory_budget_gb: PositiveFloat | None,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen, memory_budget_gb)
        self.save_hyperparameters()
        self.factors, self.regularization = factors, regularization
        self.alpha, self.iterations, self.fold_in = alpha, iterations, fold_in

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        # B, and its float32 product before it is kept: two n x n on the host
        host = torch.device("cpu")
        self.check_memory(host, torch.float32, 2 * self.num_items**2, "its item x item matrix")
        seed = torch.initial_seed() % 2**31  # the run's seed (seed_everything)
        y = als_item_factors(
            sp.csr_matrix(binary(train)),
            self.factors,
            self.regularization,
            self.alpha,
            self.iterations,
            seed,
        )
        self.set_weights(torch.from_numpy(fold_in_weights(y, self.fold_in)))
        log.info(
            "iALS fit on %d items, %d factors, regularization %s, alpha %s, fold-in %s",
            self.num_items,
            self.factors,
            self.regularization,
            self.alpha,
            self.fold_in,
        )
