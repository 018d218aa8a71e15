r"""Full-ranking top-K metrics on torch tensors, batched.

Every item is ranked; the caller sets the scores of the user's training items to ``-inf``
first (:func:`exclude_seen`). For one user with held-out set :math:`T` and top-K list
:math:`r_1..r_K`, with :math:`h_j = [r_j \in T]` and :math:`m = \min(K, |T|)`:

- Recall@K  :math:`= \sum_j h_j / m` (the competition's definition: a user with more
  held-out items than K can still reach 1);
- NDCG@K    :math:`= \mathrm{DCG} / \mathrm{IDCG}`, :math:`\mathrm{DCG} = \sum_j h_j / \log_2(j+1)`,
  :math:`\mathrm{IDCG} = \sum_{j=1}^{m} 1 / \log_2(j+1)`;
- HitRate@K :math:`= [\sum_j h_j > 0]`.

Catalogue coverage@K is the share of all items that appear in at least one evaluated
user's top-K list.

Users without held-out items are skipped. Batches return *sums* and a user count, so
the mean over any number of batches (or processes) is exact: sum the sums, then divide.
"""

from __future__ import annotations

import numpy as np
import torch

METRICS = ("recall", "ndcg", "hit")


def exclude_seen(scores: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Scores with the ``seen`` (B, I) items set to -inf (in place, and returned)."""
    return scores.masked_fill_(seen > 0, float("-inf"))


def topk_metric_sums(
    scores: torch.Tensor, targets: torch.Tensor, ks: list[int] | tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Sums over the batch of Recall@K, NDCG@K and HitRate@K for each K, plus ``"users"``.

    Args:
        scores: (B, I) float, seen items already at -inf.
        targets: (B, I) binary, the held-out items.

    >>> s = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    >>> t = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    >>> r = topk_metric_sums(s, t, [2])
    >>> round(r["recall@2"].item(), 4), round(r["hit@2"].item(), 4), int(r["users"])
    (0.5, 1.0, 2)
    >>> round(r["ndcg@2"].item(), 4)   # user 0: (1/log2(3)) / (1 + 1/log2(3)); user 1: 0
    0.3869
    """
    k_max = min(max(ks), scores.shape[1])
    return ranked_metric_sums(scores.topk(k_max, dim=1).indices, targets, ks)


def ranked_metric_sums(
    top: torch.Tensor, targets: torch.Tensor, ks: list[int] | tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """:func:`topk_metric_sums` of each user's top items already ranked: ``top`` (B, k_max)
    item indices, best first; a K above ``k_max`` is cut to it."""
    targets = targets.float()
    n_pos = targets.sum(dim=1)
    has = n_pos > 0
    k_max = top.shape[1]
    hits = targets.gather(1, top)  # (B, k_max)
    discounts = 1.0 / torch.log2(torch.arange(2, k_max + 2, device=top.device).float())
    out: dict[str, torch.Tensor] = {"users": has.sum().float()}
    for k in ks:
        kk = min(k, k_max)
        h = hits[:, :kk]
        m = torch.clamp(n_pos, max=kk)
        n_hit = h.sum(dim=1)
        dcg = (h * discounts[:kk]).sum(dim=1)
        idcg = torch.cumsum(discounts[:kk], 0)[(m - 1).clamp(min=0).long()]
        recall = torch.where(has, n_hit / m.clamp(min=1), torch.zeros_like(n_hit))
        ndcg = torch.where(has, dcg / idcg, torch.zeros_like(dcg))
        out[f"recall@{k}"] = recall.sum()
        out[f"ndcg@{k}"] = ndcg.sum()
        out[f"hit@{k}"] = ((n_hit > 0) & has).float().sum()
    return out


class MetricAccumulator:
    """Adds up :func:`topk_metric_sums` (and per-item top-K appearances, for coverage) over
    batches; ``compute()`` gives the means.

    Every sum exists from the start (zeros), so under data parallelism a process that
    scored no user still takes part in the reduction (which every process must join)."""

    def __init__(self, ks: list[int] | tuple[int, ...], num_items: int) -> None:
        self.ks = list(ks)
        self.num_items = num_items
        self.sums: dict[str, torch.Tensor] = {}
        self.reset()

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        if self.sums["users"].device != scores.device:
            self.sums = {k: v.to(scores.device) for k, v in self.sums.items()}
        for name, v in topk_metric_sums(scores, targets, self.ks).items():
            self.sums[name] = self.sums[name] + v
        evaluated = targets.sum(dim=1) > 0
        for k in self.ks:
            top = scores[evaluated].topk(min(k, scores.shape[1]), dim=1).indices
            self.sums[f"_appear@{k}"] = self.sums[f"_appear@{k}"].index_add(
                0, top.reshape(-1), torch.ones(top.numel(), device=scores.device)
            )

    def compute(self, reduce=None) -> dict[str, torch.Tensor]:
        """Means over users and coverage; ``reduce`` (e.g. a sum across processes) is applied
        to the sums first, so the result is exact under data parallelism: each user counted
        once, sums added before dividing, coverage from the summed appearance histogram."""
        sums = {k: (reduce(v) if reduce else v) for k, v in self.sums.items()}
        users = sums.pop("users").clamp(min=1)
        out = {}
        for k, v in sums.items():
            if k.startswith("_appear@"):
                out[f"coverage@{k.split('@')[1]}"] = (v > 0).float().mean()
            else:
                out[k] = v / users
        return out

    def reset(self, device: torch.device | str = "cpu") -> None:
        zero = torch.zeros((), device=device)
        self.sums = {"users": zero}
        for k in self.ks:
            for m in METRICS:
                self.sums[f"{m}@{k}"] = zero
            self.sums[f"_appear@{k}"] = torch.zeros(self.num_items, device=device)


def grouped_recall(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, k: int) -> float:
    """Recall@K (hits / min(K, positives)) within groups of candidates: ``labels`` and
    ``scores`` hold consecutive groups of ``groups[g]`` rows (one user's candidates); equal
    scores rank in row order. The mean over the groups with a positive (the users whose
    list a re-ranker can change).

    >>> y = np.array([0, 1, 0, 1, 0]); s = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
    >>> grouped_recall(y, s, np.array([3, 2]), 1)  # user 0 misses, user 1 misses
    0.0
    >>> grouped_recall(y, s, np.array([3, 2]), 2)  # each finds its one positive
    1.0
    """
    groups = np.asarray(groups)
    group_of = np.repeat(np.arange(len(groups)), groups)
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64), group_of))
    starts = np.cumsum(groups) - groups
    rank = np.arange(len(order)) - starts[group_of[order]]
    hit = (rank < k) & (np.asarray(labels)[order] > 0)
    hits = np.bincount(group_of[order], weights=hit, minlength=len(groups))
    positives = np.bincount(group_of, weights=np.asarray(labels) > 0, minlength=len(groups))
    has = positives > 0
    if not has.any():
        return 0.0
    return round(float(np.mean(hits[has] / np.minimum(k, positives[has]))), 6)
