"""Item neighbourhood baselines, fit in one pass over the training matrix.

ItemKNN (cosine): ``B_ij = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink)`` for items i != j
(``U_i``: the users of item i), each target item j keeping its ``k`` most similar items i.

RP3beta (Paudel et al., "Updatable, accurate, diverse, and scalable recommendations for
interactive applications", TiiS 2017; as tuned by Dacrema et al., RecSys 2019): a random
walk item -> user -> item with the transition probabilities raised to ``alpha``,

    B_ij = (sum_u P_iu^alpha P_uj^alpha) / pop_j^beta,

``P_iu = x_ui / |U_i|``, ``P_uj = x_uj / |I_u|``, ``pop_j = |U_j|``; each source item i keeps
its ``k`` largest entries. ``beta`` > 0 lowers the weight of popular items.

Both are computed in float32 on the host with scipy (a sparse product) and kept as a dense
``B`` on the model's device; the memory check counts two n x n float32 matrices.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.models.item_item import ItemItemModule, binary, keep_top_k
from lightrec.params import NonNegativeFloat, PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


def cosine_weights(x: sp.csr_matrix, k: int, shrink: float) -> np.ndarray:
    """The ItemKNN matrix of the binary matrix ``x`` (float32, dense).

    >>> x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=np.float32))
    >>> cosine_weights(x, k=2, shrink=0.0).round(3).tolist()
    [[0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [0.5, 0.5, 0.0]]
    """
    w = (x.T @ x).toarray().astype(np.float32)
    norms = np.sqrt(np.diag(w)).astype(np.float32)
    denom = np.outer(norms, norms)
    denom += shrink
    np.divide(w, denom, out=w, where=denom > 0)
    w[denom <= 0] = 0.0
    np.fill_diagonal(w, 0.0)
    return keep_top_k(w, k, axis=0)  # target item j (a column) keeps its k neighbours


def _row_normalised(x: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """Each row divided by its sum, then raised to ``alpha`` (rows of zeros stay zero)."""
    sums = np.asarray(x.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    p = sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ x)
    if alpha != 1.0:
        p.data **= alpha
    return p


def rp3beta_weights(x: sp.csr_matrix, k: int, alpha: float, beta: float) -> np.ndarray:
    """The RP3beta matrix of the binary matrix ``x`` (float32, dense).

    >>> x = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1]], dtype=np.float32))
    >>> rp3beta_weights(x, k=3, alpha=1.0, beta=0.0).tolist()   # item 0 -> a user -> item
    [[0.0, 0.25, 0.25], [0.5, 0.0, 0.0], [0.5, 0.0, 0.0]]
    """
    p_iu = _row_normalised(sp.csr_matrix(x.T), alpha)
    p_ui = _row_normalised(x, alpha)
    w = (p_iu @ p_ui).toarray().astype(np.float32)
    pop = np.asarray(x.sum(axis=0)).ravel().astype(np.float32)
    scale = np.zeros_like(pop)
    np.power(pop, -beta, out=scale, where=pop > 0)
    w *= scale[None, :]
    np.fill_diagonal(w, 0.0)
    return keep_top_k(w, k, axis=1)  # source item i (a row) keeps its k strongest links


class ItemKNN(ItemItemModule):
    """Args:
    num_items: filled in from the data module.
    k: neighbours kept per item.
    shrink: added to the cosine's denominator (damps pairs of rare items).
    memory_budget_gb: an upper limit of your own for the fit's n x n matrices.
    eval_ks: cut-offs of the validation/test metrics.
    exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    OPEN_ENDED = ("k",)  # a grid whose best is its edge looks past it

    def __init__(
        self,
        num_items: PositiveInt,
        k: PositiveInt,
        shrink: NonNegativeFloat,
        memory_budget_gb: PositiveFloat | None,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen, memory_budget_gb)
        self.save_hyperparameters()
        self.k, self.shrink = k, shrink

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        # similarities, denominators, the top-k index: three n x n on the host
        host = torch.device("cpu")
        self.check_memory(host, torch.float32, 3 * self.num_items**2, "its item x item matrices")
        self.set_weights(torch.from_numpy(cosine_weights(binary(train), self.k, self.shrink)))
        log.info("ItemKNN fit on %d items, k %d, shrink %s", self.num_items, self.k, self.shrink)


class RP3beta(ItemItemModule):
    """Args:
    num_items: filled in from the data module.
    k: strongest links kept per item.
    alpha: exponent of the transition probabilities (1: the plain random walk).
    beta: popularity penalty, ``B_ij / pop_j^beta`` (0: none).
    memory_budget_gb: an upper limit of your own for the fit's n x n matrices.
    eval_ks: cut-offs of the validation/test metrics.
    exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    def __init__(
        self,
        num_items: PositiveInt,
        k: PositiveInt,
        alpha: PositiveFloat,
        beta: NonNegativeFloat,
        memory_budget_gb: PositiveFloat | None,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen, memory_budget_gb)
        self.save_hyperparameters()
        self.k, self.alpha, self.beta = k, alpha, beta

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        # the walk, its top-k index, B: three n x n on the host
        host = torch.device("cpu")
        self.check_memory(host, torch.float32, 3 * self.num_items**2, "its item x item matrices")
        w = rp3beta_weights(binary(train), self.k, self.alpha, self.beta)
        self.set_weights(torch.from_numpy(w))
        log.info(
            "RP3beta fit on %d items, k %d, alpha %s, beta %s",
            self.num_items,
            self.k,
            self.alpha,
            self.beta,
        )
