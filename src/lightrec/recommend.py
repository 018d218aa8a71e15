"""Top-K over unseen items for every user, in batches on the model's device."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.errors import LightrecError
from lightrec.metrics import exclude_seen
from lightrec.progress import track

Batch = dict[str, torch.Tensor]


@torch.no_grad()
def recommend_topk(
    score_batch: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]],
    collate: Callable[[list[int]], Batch],
    n_users: int,
    k: int,
    batch_size: int,
    device: torch.device,
    progress: str = "none",
) -> np.ndarray:
    """``(n_users, k)`` item indices, best first, never an item the user has seen; a bar in
    a terminal (``progress``, see :mod:`lightrec.progress`)."""
    out = np.empty((n_users, k), dtype=np.int64)
    starts = range(0, n_users, batch_size)
    for start in track(starts, len(starts), progress, "scoring users"):
        rows = list(range(start, min(start + batch_size, n_users)))
        batch = {name: t.to(device) for name, t in collate(rows).items()}
        scores, seen = score_batch(batch)
        scores = exclude_seen(scores.float(), seen)
        top = scores.topk(k, dim=1)
        out[rows[0] : rows[-1] + 1] = top.indices.cpu().numpy()
        if torch.isinf(top.values).any():
            bad = rows[int(torch.isinf(top.values).any(dim=1).nonzero()[0])]
            raise LightrecError(f"user row {bad} has fewer than predict.top_k={k} unseen items")
    return out


def check_enough_unseen(history: sp.csr_matrix, k: int, user_ids: Sequence | np.ndarray) -> None:
    """Fail early, naming the user, if someone has seen all but fewer than ``k`` items."""
    unseen = history.shape[1] - np.diff(history.indptr)
    short = np.flatnonzero(unseen < k)
    if len(short):
        raise LightrecError(
            f"user {user_ids[short[0]]!r} has only {unseen[short[0]]} unseen items, "
            f"fewer than predict.top_k={k}"
        )
