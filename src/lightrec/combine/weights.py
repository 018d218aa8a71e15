"""Combining members' scores: each user's scores on one scale (z-score or reciprocal rank),
and the weights of a blend chosen to maximise the validation metric, exactly and fast
(:class:`WeightSearch`)."""

from __future__ import annotations

import itertools
from typing import Any, Protocol

import numpy as np
import torch

from lightrec.errors import LightrecError
from lightrec.metrics import exclude_seen, ranked_metric_sums
from lightrec.runs.scoring import Scorer, batches, best_first

SEARCH_POOL = 100  # each member's best items per user that the weight search ranks first

METHODS = ("zscore", "rank")
RRF_K = 60.0  # reciprocal-rank fusion's usual constant


def ranks_of(scores: torch.Tensor) -> torch.Tensor:
    """Each item's rank in its row (0: the highest score).

    >>> ranks_of(torch.tensor([[0.5, 2.0, 1.0]])).tolist()
    [[2, 0, 1]]
    """
    order = scores.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return rank


def normalise(scores: torch.Tensor, seen: torch.Tensor, method: str) -> torch.Tensor:
    """Per-user scores on one scale, seen items at -inf.

    >>> s = torch.tensor([[3.0, 1.0, 2.0, 9.0]]); seen = torch.tensor([[0, 0, 0, 1]])
    >>> [round(v, 3) for v in normalise(s, seen, "zscore")[0].tolist()]  # spread sqrt(2/3)
    [1.225, -1.225, 0.0, -inf]
    >>> [round(v * 60, 3) for v in normalise(s, seen, "rank")[0].tolist()]  # 1 / (60 + rank)
    [1.0, 0.968, 0.984, -inf]
    """
    scores = scores.float()
    unseen = seen <= 0
    if method == "zscore":
        n = unseen.sum(dim=1, keepdim=True).clamp(min=1)
        mean = scores.where(unseen, 0.0).sum(dim=1, keepdim=True) / n
        var = ((scores - mean).where(unseen, 0.0) ** 2).sum(dim=1, keepdim=True) / n
        out = (scores - mean) / var.sqrt().clamp(min=1e-12)
    elif method == "rank":
        out = 1.0 / (RRF_K + ranks_of(exclude_seen(scores.clone(), seen)).float())
    else:
        raise LightrecError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    return out.masked_fill(~unseen, float("-inf"))


def member_scores(score: Scorer, users: np.ndarray, method: str, batch_size: int) -> torch.Tensor:
    """Normalised scores (users, items) of one scorer, in half precision on the host."""
    out = [
        normalise(scores, seen, method).half().cpu()
        for _, scores, seen in batches(score, users.tolist(), batch_size)
    ]
    return torch.cat(out)


class WeightSearch:
    """The validation metric of any weighting of the members' normalised scores.

    A weighting's top-k is taken first among each user's candidates: the union of every
    member's best ``pool`` items. An item outside the union scores at most the weighted
    sum of each member's ``pool``-th best score; where the union's k-th best beats that
    bound, the union's top-k is the whole catalogue's, exactly (equal scores in item
    order, both ways). Only the other users are ranked over every item. A weighting then
    costs (users x members x pool), not (users x items): on three competition-sized runs
    and 20,000 users the blend took 75 s instead of 419 s (docs/BENCHMARKS.md).

    Args:
        parts: each member's normalised scores (users, items), seen items at -inf.
        targets: (users, items) binary, the validation items.
        metric, k: what to maximise, e.g. ``"ndcg@10"`` and 10.
    """

    def __init__(
        self,
        parts: list[torch.Tensor],
        targets: torch.Tensor,
        metric: str,
        k: int,
        pool: int = SEARCH_POOL,
    ) -> None:
        self.parts, self.targets, self.metric = parts, targets, metric
        n_items = parts[0].shape[1]
        self.k = min(k, n_items)
        size = min(max(pool, self.k), n_items)
        tops = [_top(p, size) for p in parts]
        # an item outside a member's best `size` scores at most its size-th best; nothing
        # is outside when `size` is the whole catalogue
        self.floors = [
            values[:, -1] if size < n_items else torch.full_like(values[:, -1], float("-inf"))
            for values, _ in tops
        ]
        items, _ = torch.cat([indices for _, indices in tops], dim=1).sort(dim=1)
        again = torch.zeros_like(items, dtype=torch.bool)
        again[:, 1:] = items[:, 1:] == items[:, :-1]  # an item in several members' best
        self.items = items
        self.candidates = [
            p.gather(1, items).float().masked_fill(again, float("-inf")) for p in parts
        ]
        self.full_rows = 0  # users ranked over every item so far (for the record)

    def __call__(self, weights: np.ndarray) -> float:
        active = [(float(w), j) for j, w in enumerate(weights) if w > 0]
        blended = sum(w * self.candidates[j] for w, j in active)
        bound = sum(w * self.floors[j] for w, j in active)
        assert isinstance(blended, torch.Tensor) and isinstance(bound, torch.Tensor)
        values, at = best_first(blended, self.k)
        top = self.items.gather(1, at)  # candidates are in item order: the same tie rule
        rows = torch.nonzero(~(values[:, -1] > bound)).squeeze(1)  # the bound may tie
        if len(rows):
            full = weighted([(w, self.parts[j][rows]) for w, j in active])
            top[rows] = best_first(full, self.k)[1]
            self.full_rows += len(rows)
        sums = ranked_metric_sums(top, self.targets, [self.k])
        return float(sums[self.metric] / sums["users"].clamp(min=1))


def weighted(parts: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """The blend of normalised parts: the weighted sum in float32 of each part as kept (half
    precision), the one computation the weight search ranks and the submission applies.

    >>> weighted([(0.5, torch.tensor([[2.0]]).half()), (0.5, torch.tensor([[4.0]]).half())])
    tensor([[3.]])
    """
    total = None
    for w, part in parts:
        term = w * part.float()
        total = term if total is None else total + term
    assert total is not None, "a blend needs a part with a weight"
    return total


def _top(part: torch.Tensor, size: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's best ``size`` scores and their items, ``chunk`` rows at a time in float32
    (the parts are kept in half precision)."""
    tops = [part[i : i + chunk].float().topk(size, dim=1) for i in range(0, len(part), chunk)]
    return torch.cat([t.values for t in tops]), torch.cat([t.indices for t in tops])


def simplex_grid(n: int, step: float) -> list[np.ndarray]:
    """Every weight vector of ``n`` non-negative multiples of ``step`` summing to 1.

    >>> [w.tolist() for w in simplex_grid(2, 0.5)]
    [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    """
    units = round(1 / step)
    grid = []
    for cut in itertools.combinations(range(units + n - 1), n - 1):
        bounds = (-1, *cut, units + n - 1)
        grid.append(np.array([bounds[i + 1] - bounds[i] - 1 for i in range(n)]) / units)
    return grid


class Weighing(Protocol):
    """What a weight search scores: the members (``parts``) and any weighting's metric."""

    parts: list[Any]

    def __call__(self, weights: np.ndarray) -> float: ...


def choose_weights(search: Weighing) -> tuple[np.ndarray, float]:
    """Weights maximising the blended validation metric, and that metric. Ties keep the
    earlier candidate; candidates start from each run alone."""
    n = len(search.parts)
    if n <= 4:
        candidates = simplex_grid(n, 0.05 if n <= 3 else 0.1)
        scored = [(search(w), -i, w) for i, w in enumerate(candidates)]
        best, _, weights = max(scored, key=lambda t: (t[0], t[1]))
        return weights, best
    singles = [search(np.eye(n)[i]) for i in range(n)]
    weights = np.eye(n)[int(np.argmax(singles))]
    best = max(singles)
    for _ in range(20):  # coordinate ascent: move weight towards one run at a time
        improved = False
        for i in range(n):
            for a in np.arange(0.05, 1.0001, 0.05):
                w = (1 - a) * weights + a * np.eye(n)[i]
                value = search(w)
                if value > best + 1e-12:
                    best, weights, improved = value, w, True
        if not improved:
            break
    return weights, best


class Without:
    """A weight search over every part but ``left_out``: the blend without one member (its
    weight held at 0), for a member's marginal value."""

    def __init__(self, search: Weighing, left_out: int) -> None:
        self.search, self.left_out = search, left_out
        self.parts = [p for j, p in enumerate(search.parts) if j != left_out]

    def __call__(self, weights: np.ndarray) -> float:
        return self.search(np.insert(np.asarray(weights, dtype=np.float64), self.left_out, 0.0))

    def full(self, weights: np.ndarray) -> np.ndarray:
        """``weights`` of the other parts as a weighting of every part."""
        return np.insert(np.asarray(weights, dtype=np.float64), self.left_out, 0.0)
