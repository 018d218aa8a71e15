"""Scoring users in batches on a device, and the top-K over unseen items.

A *scorer* maps a list of user rows to ``(scores (B, I), seen (B, I))`` on its device: one
model's (:func:`model_scorer`) or several models' blended (``lightrec.combine.blend``). Predict, the
blend's validation and its submission all run the one loop here (:func:`batches`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.errors import LightrecError
from lightrec.metrics import exclude_seen
from lightrec.utils.console import track

Batch = dict[str, torch.Tensor]
Scorer = Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]]


def model_scorer(
    score_batch: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]],
    collate: Callable[[list[int]], Batch],
    device: torch.device,
) -> Scorer:
    """A model's scorer: its ``score_batch`` on the batches ``collate`` builds, on ``device``."""

    def score(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return score_batch({name: t.to(device) for name, t in collate(rows).items()})

    return score


@torch.no_grad()
def batches(
    score: Scorer, rows: Sequence[int], batch_size: int, progress: str = "none"
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """``(rows, scores, seen)`` for ``rows`` in batches of ``batch_size`` (a bar in a
    terminal, see :mod:`lightrec.training.progress`)."""
    starts = range(0, len(rows), batch_size)
    for start in track(starts, len(starts), progress, "scoring users"):
        chunk = [int(r) for r in rows[start : start + batch_size]]
        yield (chunk, *score(chunk))


def recommend_topk(
    score: Scorer, n_users: int, k: int, batch_size: int, progress: str = "none"
) -> np.ndarray:
    """``(n_users, k)`` item indices, best first, never an item the user has seen."""
    return top_items(score, range(n_users), k, batch_size, progress)[0]


def top_items(
    score: Scorer,
    rows: Sequence[int],
    k: int,
    batch_size: int,
    progress: str = "none",
    strict: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(len(rows), k)`` item indices of the users ``rows``, best first (equal scores in
    item order), never an item the user has seen, and their scores (the one top-K of
    predict, the blend and the Python API). A user with fewer than ``k`` unseen items is
    refused, or with ``strict=False`` ends in ``-inf`` scores (for a caller that cuts each
    row to a length the row supports)."""
    out = np.empty((len(rows), k), dtype=np.int64)
    values = np.empty((len(rows), k), dtype=np.float32)
    at = 0
    for chunk, scores, seen in batches(score, rows, batch_size, progress):
        check_finite(scores, chunk)
        top_values, top_items_ = best_first(exclude_seen(scores.float(), seen), k)
        out[at : at + len(chunk)] = top_items_.cpu().numpy()
        values[at : at + len(chunk)] = top_values.cpu().numpy()
        at += len(chunk)
        if strict and torch.isinf(top_values).any():
            bad = chunk[int(torch.isinf(top_values).any(dim=1).nonzero()[0])]
            raise LightrecError(f"user row {bad} has fewer than predict.top_k={k} unseen items")
    return out, values


def without_items(score: Scorer, items: np.ndarray) -> Scorer:
    """``score`` with ``items`` counted as seen by every user: never recommended."""
    left_out = torch.from_numpy(np.asarray(items, dtype=np.int64))

    def scored(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        scores, seen = score(rows)
        seen = seen.clone()
        seen[:, left_out.to(seen.device)] = 1
        return scores, seen

    return scored


def check_finite(scores: torch.Tensor, rows: Sequence[int]) -> None:
    """Refuse scores holding NaN (a model whose weights are not finite): never ranked,
    never written.

    >>> try:
    ...     check_finite(torch.tensor([[1.0, float("nan")]]), [7])
    ... except LightrecError as e:
    ...     print(str(e)[:47])
    the model's scores for user row 7 hold NaN: its
    """
    bad = torch.isnan(scores).any(dim=1)
    if bool(bad.any()):
        row = rows[int(bad.nonzero()[0])]
        raise LightrecError(
            f"the model's scores for user row {row} hold NaN: its weights are not finite "
            "numbers; train it again (a finite model.lam, dropout, lr)"
        )


def best_first(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's ``k`` highest scores and their columns, equal scores in column order (half
    precision ties often at the top; ``topk`` would break them either way).

    >>> best_first(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), 2)[1].tolist()
    [[1, 2]]
    """
    values, columns = scores.topk(k, dim=1)
    tied = (values[:, 1:] == values[:, :-1]).any(dim=1)
    tied |= (scores >= values[:, -1:]).sum(dim=1) > k  # a tie across the cut
    if tied.any():  # only these rows need the (slower) stable sort
        rows = torch.nonzero(tied).squeeze(1)
        v, c = scores[rows].sort(dim=1, descending=True, stable=True)
        values[rows], columns[rows] = v[:, :k], c[:, :k]
    return values, columns


def check_enough_unseen(
    history: sp.csr_matrix, k: int, user_ids: Sequence | np.ndarray, left_out: int = 0
) -> None:
    """Fail early, naming the user, if someone has seen all but fewer than ``k`` items
    (``left_out`` more items no user may get)."""
    unseen = history.shape[1] - left_out - np.diff(history.indptr)
    short = np.flatnonzero(unseen < k)
    if len(short):
        raise LightrecError(
            f"user {str(user_ids[short[0]])!r} has only {unseen[short[0]]} unseen items, "
            f"fewer than predict.top_k={k}"
        )


def check_top_k(k: int, n_items: int, key: str = "predict.top_k") -> None:
    """Refuse a list length no catalogue can fill: at least 1, at most the items known."""
    if k < 1:
        raise LightrecError(f"{key}={k} must be at least 1")
    if k > n_items:
        raise LightrecError(f"{key}={k} is more than the {n_items:,} items the model knows")
