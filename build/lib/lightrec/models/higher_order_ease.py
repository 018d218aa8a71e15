"""Higher-order EASE: Steck & Liang, "Negative Interactions for Improved Collaborative
Filtering: Don't go Deeper, go Higher", RecSys 2021. EASE plus terms for pairs of items:

    X ~ X B + Z C,   z_u,p = x_ui x_uj for the selected pairs p = (i, j)

with ``diag(B) = 0`` (an item never predicts itself) and ``C[p, k] = 0`` when k is i or j
(a pair never predicts one of its own items). The pairs are the ``pairs`` most frequent
co-occurring ones with at least ``min_support`` users. The fit minimises

    ||X - X B - Z C||^2 + lam ||B||^2 + lam_pairs ||C||^2

by alternating the two exact block minimisations (each a ridge regression with its
constraints, closed form); the objective is convex, so they converge to its minimum.
``iterations`` alternations (the paper's ADMM needs a few tens; here 10 are within 1e-6 of
convergence on MovieLens-100K). Float64 on the CPU and float32 on a GPU by default, as EASE.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.models.ease import ease_weights, gram_matrix
from lightrec.models.item_item import FitDtype, ItemItemModule, binary, fit_dtype
from lightrec.params import NonNegativeInt, PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


def frequent_pairs(x: sp.csr_matrix, n_pairs: int, min_support: int) -> np.ndarray:
    """``(n, 2)`` item pairs ``i < j``: the ``n_pairs`` most co-occurring ones with at least
    ``min_support`` users (ties: the lower pair first).

    >>> x = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=np.float32))
    >>> frequent_pairs(x, 2, 1).tolist()
    [[0, 1], [1, 2]]
    """
    co = sp.triu(x.T @ x, k=1).tocoo()
    keep = co.data >= min_support
    i, j, count = co.row[keep], co.col[keep], co.data[keep]
    order = np.lexsort((j, i, -count))[:n_pairs]
    return np.stack([i[order], j[order]], axis=1).astype(np.int64)


def pair_rows(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """``Z``: for each row of ``x`` (B, I), whether it holds both items of each pair (B, P)."""
    return x[:, pairs[:, 0]] * x[:, pairs[:, 1]]


def higher_order_weights(
    x: sp.csr_matrix,
    pairs: np.ndarray,
    lam: float,
    lam_pairs: float,
    iterations: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C)`` of the fit above, for the binary matrix ``x`` and the selected ``pairs``."""
    n_items = x.shape[1]
    pairs_t = torch.from_numpy(pairs).to(device)
    gram = gram_matrix(x, device, dtype)  # X^T X
    xd = torch.from_numpy(x.toarray()).to(device=device, dtype=dtype)
    z = pair_rows(xd, pairs_t)  # (U, P)
    xtz = xd.T @ z  # (I, P)
    ztz = z.T @ z  # (P, P)
    del z, xd
    p_b = torch.linalg.inv(gram + lam * torch.eye(n_items, dtype=dtype, device=device))
    p_b_diag = p_b.diagonal().clone()
    q = torch.linalg.inv(ztz + lam_pairs * torch.eye(len(pairs), dtype=dtype, device=device))
    # the constrained entries of C: column k is zero at the pairs that contain k
    members: list[list[int]] = [[] for _ in range(n_items)]
    for p, (i, j) in enumerate(pairs.tolist()):
        members[i].append(p)
        members[j].append(p)
    c = torch.zeros(len(pairs), n_items, dtype=dtype, device=device)
    b = ease_weights(gram.clone(), lam)
    for _ in range(iterations):
        # B-step: EASE on the target X - Z C, i.e. X^T (X - Z C) = G - X^T Z C
        b_free = p_b @ (gram - xtz @ c)
        b = b_free - p_b * (b_free.diagonal() / p_b_diag)[None, :]
        # C-step: ridge of X - X B on Z, Z^T (X - X B) = X^T Z ^T (I - B) ... per column k,
        # then the entries of the pairs containing k forced to zero (a small solve each)
        c_free = q @ (xtz.T - xtz.T @ b)
        c = c_free
        for k, rows in enumerate(members):
            if rows:
                idx = torch.tensor(rows, device=device)
                sub = q[idx][:, idx]
                c[:, k] -= q[:, idx] @ torch.linalg.solve(sub, c_free[idx, k])
    return b, c


class HigherOrderEASE(ItemItemModule):
    """Args:
    num_items: filled in from the data module.
    lam: L2 regularisation of the item-item weights B (EASE's lambda).
    lam_pairs: L2 regularisation of the pair-item weights C.
    pairs: how many item pairs get their own weights (the most frequent ones).
    min_support: a pair needs at least this many users.
    iterations: alternations of the two exact block fits.
    dtype: ``auto`` (float64 on the CPU, float32 on the GPU), ``float32`` or ``float64``.
    memory_budget_gb: an upper limit of your own for the fit's matrices.
    eval_ks: cut-offs of the validation/test metrics.
    exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    C: torch.Tensor
    pair_index: torch.Tensor

    def __init__(
        self,
        num_items: PositiveInt,
        lam: PositiveFloat,
        lam_pairs: PositiveFloat,
        pairs: NonNegativeInt,
        min_support: PositiveInt,
        iterations: PositiveInt,
        dtype: FitDtype,
        memory_budget_gb: PositiveFloat | None,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen, memory_budget_gb)
        self.save_hyperparameters()
        self.lam, self.lam_pairs = lam, lam_pairs
        self.n_pairs, self.min_support, self.iterations = pairs, min_support, iterations
        self.dtype_name = dtype
        self.register_buffer("C", torch.zeros(0, 0))
        self.register_buffer("pair_index", torch.zeros(0, 2, dtype=torch.long))

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        device = self.B.device
        dtype = fit_dtype(self.dtype_name, device)
        need = 4 * self.num_items**2 + 2 * self.n_pairs**2 + 3 * self.n_pairs * self.num_items
        need += (self.n_pairs + self.num_items) * train.shape[0]  # the dense X and Z
        what = "its item x item, pair x pair and user x item matrices"
        self.check_memory(device, dtype, need, what, " fewer model.pairs,")
        x = binary(train, np.float64 if dtype == torch.float64 else np.float32)
        pairs = frequent_pairs(x, self.n_pairs, self.min_support)
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            b, c = higher_order_weights(
                x, pairs, self.lam, self.lam_pairs, self.iterations, device, dtype
            )
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        self.set_weights(b)
        self.C = c.to(torch.float32)
        self.pair_index = torch.from_numpy(pairs).to(device)
        log.info(
            "higher-order EASE fit on %d items and %d pairs (lambda %s, %s), %s on %s",
            self.num_items,
            len(pairs),
            self.lam,
            self.lam_pairs,
            dtype,
            device,
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self._with_pairs(x @ self.B, x)

    def history_scores(
        self, indptr: torch.Tensor, indices: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        return self._with_pairs(super().history_scores(indptr, indices, x), x)

    def _with_pairs(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Item scores ``out`` plus the pairs' part, ``pair_rows(x) @ C``."""
        if self.pair_index.shape[0]:
            out = out + pair_rows(x, self.pair_index) @ self.C
        return out
