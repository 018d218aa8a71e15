"""Next-item losses of the sequence models (SASRec and BERT4Rec share them): full
cross-entropy over the catalogue, or a loss over the target and ``num_negatives`` sampled
items, drawn on the device.

- ``ce``: softmax over every item (Klenitskiy & Vasilev 2023); exact, costs N x I logits.
- ``sampled_softmax``: softmax over the target and K negatives; with popularity negatives
  every logit is corrected by ``-log q(item)`` (the logQ correction, Yi et al. 2019) so the
  sampled softmax estimates the full one. A negative equal to the target is masked out.

gSASRec's gBCE (Petrov & Macdonald, RecSys 2023) was shipped and removed: on MovieLens-100K
it did not learn (Recall@10 0.0824 against 0.1813 for sampled softmax over the same draws,
3 seeds), whatever the dropout, weight decay, beta, output table or patience, and its cause
was not found (docs/CHANGELOG.md). A run trained with it still loads and scores.

The losses are pure functions of logits (tested against hand computations); the sampling
and the logits of chosen items live in :class:`NextItemLoss`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

LossName = Literal["ce", "sampled_softmax"]
Negatives = Literal["uniform", "popularity"]


class ItemScorer(Protocol):
    """What a sequence model's net offers the loss."""

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(N, I) logits of hidden states (N, D) over every item."""
        ...

    def item_logits(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, L, K) logits of the hidden states (B, L, D) of B sequences for each
        sequence's own items (B, K) (0-based indices): one batched product."""
        ...


def sampled_softmax_loss(
    logits: torch.Tensor,
    log_q: torch.Tensor | None = None,
    masked: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of column 0 (the target) against the other columns (negatives).

    ``logits`` (N, 1 + K); ``log_q`` (N, 1 + K) log sampling probabilities to subtract (the
    logQ correction), or None; ``masked`` (N, K) True where a negative must not count (it
    is the target); ``weight`` (N,) 1 for the rows that count, 0 for the others (padding),
    or None for all.

    >>> round(sampled_softmax_loss(torch.tensor([[2.0, 1.0, 0.0]])).item(), 4)  # -log softmax
    0.4076
    """
    if log_q is not None:
        logits = logits - log_q
    if masked is not None:
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(masked, -math.inf)], dim=1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    rows = F.cross_entropy(logits, target, reduction="none")
    return _weighted_mean(rows, torch.ones_like(rows), weight)


def _weighted_mean(
    total: torch.Tensor, count: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """sum(total) / sum(count) over the rows whose ``weight`` is not 0 (all when None);
    a row left out never reaches the sum, not even as 0 x inf."""
    if weight is not None:
        keep = weight > 0
        total = torch.where(keep, total, torch.zeros_like(total))
        count = torch.where(keep, count, torch.zeros_like(count))
    return total.sum() / count.sum().clamp_min(1)


class NextItemLoss:
    """The configured loss of hidden states (N, D) against target items (N,)."""

    def __init__(
        self,
        name: LossName,
        num_items: int,
        num_negatives: int,
        negatives: Negatives,
    ) -> None:
        self.name = name
        self.num_items = num_items
        self.k = num_negatives
        self.negatives = negatives
        self.log_q: torch.Tensor | None = None  # (I,) log popularity, set by set_counts()

    def set_counts(self, counts: torch.Tensor) -> None:
        """Item counts of the training rows (popularity negatives); +1 so every item can be
        drawn."""
        q = (counts.double() + 1.0) / (counts.double() + 1.0).sum()
        self.log_q = q.log().float()

    def sample(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, K) negative items, one row per sequence (shared by its positions, as in
        gSASRec), drawn on ``device``: their logits are a batched (L, D) x (D, K) product per
        sequence, where negatives of each position's own would gather an (N, K, D) block of
        embeddings (slower than the full cross-entropy on a CPU, docs/BENCHMARKS.md)."""
        if self.negatives == "uniform":
            return torch.randint(self.num_items, (n, self.k), device=device)
        log_q = self._log_q_on(device)
        return torch.multinomial(log_q.exp(), n * self.k, replacement=True).view(n, self.k)

    def _log_q_on(self, device: torch.device) -> torch.Tensor:
        """The log popularity on ``device``, moved there once (not a copy per step)."""
        if self.log_q is None:
            raise RuntimeError("popularity negatives need the item counts (set_counts)")
        if self.log_q.device != device:
            self.log_q = self.log_q.to(device)
        return self.log_q

    def __call__(
        self,
        net: ItemScorer,
        h: torch.Tensor,
        targets: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of hidden states ``h`` (B, L, D) of B sequences, or (N, D) rows, against
        target items ``targets`` (B, L) or (N,), over the positions ``valid`` marks (None:
        every position).

        The sampled losses score every position and weigh the invalid ones out: no
        data-dependent shape, so no wait for the device. The full cross-entropy first keeps
        the valid positions (one such wait): its N x I logits would cost more at padding
        positions than the wait does."""
        if self.name == "ce":
            if valid is not None:
                where = valid.nonzero(as_tuple=True)  # one host sync (see above)
                h, targets = h[where], targets[where]
            return F.cross_entropy(net.logits(h).float(), targets)
        if h.dim() == 2:  # rows: each its own sequence of one position
            h, targets = h[:, None], targets[:, None]
            valid = None if valid is None else valid[:, None]
        b, length, d = h.shape
        targets = targets.clamp_min(0)  # a padding position's target is weighed out below
        negatives = self.sample(b, h.device)  # (B, K)
        positive = net.item_logits(h.reshape(b * length, 1, d), targets.reshape(-1, 1))
        negative = net.item_logits(h, negatives)  # (B, L, K)
        logits = torch.cat([positive.reshape(-1, 1), negative.reshape(b * length, -1)], 1)
        masked = (negatives[:, None, :] == targets[:, :, None]).reshape(b * length, -1)
        weight = None if valid is None else valid.reshape(-1)
        log_q = None
        if self.negatives == "popularity":
            q = self._log_q_on(h.device)
            q_neg = q[negatives][:, None, :].expand(b, length, -1).reshape(b * length, -1)
            log_q = torch.cat([q[targets].reshape(-1, 1), q_neg], 1)
        return sampled_softmax_loss(logits.float(), log_q, masked, weight)


def training_item_counts(trainer: Any, num_items: int) -> torch.Tensor:
    """(I,) how often each item occurs in the training rows of the trainer's data module."""
    csr = trainer.datamodule.train_csr
    return torch.bincount(torch.from_numpy(csr.indices.astype("int64")), minlength=num_items)
