"""SASRec: a causal transformer that reads a user's items in order and predicts, at every
position, the next item, with a softmax over the whole catalogue.

Kang, McAuley. "Self-Attentive Sequential Recommendation", ICDM 2018,
https://arxiv.org/abs/1808.09781. Trained as in Klenitskiy, Vasilev. "Turning Dross Into
Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023,
https://arxiv.org/abs/2309.07602: full cross-entropy over every item instead of the
original's one sampled negative, which makes SASRec beat BERT4Rec there.

It reads the same sequence view as BERT4Rec (tokens of :mod:`lightrec.data.sequences`,
left-padded, the most recent item last). A training sequence is shifted right by one pad:
position ``j`` reads items up to ``j - 1`` and is trained to predict item ``j``, so the
last position is the one that, at scoring time, reads the whole history and predicts
what comes next.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from lightrec.data.batches import SEQUENCE, dense_rows
from lightrec.data.sequences import PAD, item_rows, to_items, vocab_size
from lightrec.models.base import Batch, RecommenderModule
from lightrec.models.losses import LossName, Negatives, NextItemLoss, training_item_counts
from lightrec.models.transformer import Block, dropout, init_weights
from lightrec.params import NonNegativeFloat, PositiveFloat, PositiveInt, Probability, Range


def causal_mask(seq: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool: a query attends to itself and to earlier real tokens, never to a
    later position. A pad query attends to itself alone (its output is never used; without
    a key at all its softmax would be undefined).

    >>> causal_mask(torch.tensor([[0, 5, 6]]))[0, 0].int().tolist()
    [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    """
    length = seq.shape[1]
    past = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
    real_key = (seq != PAD)[:, None, None, :]  # (B, 1, 1, L)
    itself = torch.eye(length, dtype=torch.bool, device=seq.device)
    return (past & real_key) | itself


class SASRecNet(nn.Module):
    """Item and position embeddings, causal transformer blocks, output tied to the items.

    Args:
        num_items: catalogue size; the embedding table has a row per token.
        max_len: sequence length (learned positions).
        hidden_size, num_layers, num_heads, dropout: the transformer.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.num_items = num_items
        self.item_emb = nn.Embedding(vocab_size(num_items), hidden_size, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, hidden_size)
        self.ln = nn.LayerNorm(hidden_size)
        self.dropout = dropout
        self.blocks = nn.ModuleList(
            Block(hidden_size, num_heads, dropout, dropout) for _ in range(num_layers)
        )
        self.apply(init_weights)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, D); position j has seen tokens 0..j only."""
        attend = causal_mask(seq)
        pos = torch.arange(seq.shape[1], device=seq.device)
        h = dropout(self.ln(self.item_emb(seq) + self.pos_emb(pos)), self.dropout, self.training)
        for block in self.blocks:
            h, _ = block(h, attend)
        return h

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores (N, num_items) for hidden states (N, D), against the item embeddings."""
        return h @ self.item_emb.weight[item_rows(self.num_items)].t()

    def item_logits(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores (B, L, K) of the hidden states (B, L, D) of B sequences for each
        sequence's own items (B, K) alone."""
        return torch.einsum("bld,bkd->blk", h, self.item_emb(items + 1))  # token = item + 1


class SASRec(RecommenderModule):
    """LightningModule: next-item cross-entropy at every position around :class:`SASRecNet`.

    Args:
        num_items: filled in from the data module.
        max_len, hidden_size, num_layers, num_heads, dropout: see :class:`SASRecNet`.
        lr, weight_decay: AdamW.
        eval_ks: cut-offs of the validation/test metrics.
        exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
        loss, num_negatives, negatives: the training loss
            (:mod:`lightrec.models.losses`): full cross-entropy by default.
    """

    data_view = SEQUENCE

    def __init__(
        self,
        num_items: PositiveInt,
        max_len: Annotated[int, Range(2)],
        hidden_size: PositiveInt,
        num_layers: PositiveInt,
        num_heads: PositiveInt,
        dropout: Probability,
        lr: PositiveFloat,
        weight_decay: NonNegativeFloat,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
        loss: LossName,
        num_negatives: PositiveInt,
        negatives: Negatives,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen)
        self.save_hyperparameters()
        self.net = SASRecNet(num_items, max_len, hidden_size, num_layers, num_heads, dropout)
        self.lr = lr
        self.weight_decay = weight_decay
        self.next_item_loss = NextItemLoss(loss, num_items, num_negatives, negatives)

    def on_fit_start(self) -> None:
        if self.next_item_loss.negatives == "popularity":
            counts = training_item_counts(self.trainer, self.num_items)
            self.next_item_loss.set_counts(counts)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        seq = batch["seq"]  # (B, L) tokens, most recent last
        inputs = F.pad(seq[:, :-1], (1, 0), value=PAD)  # position j reads items before j
        h = self.net.encode(inputs)
        valid = (inputs != PAD) & (seq != PAD)  # every position with a past and a target
        loss = self.next_item_loss(self.net, h, to_items(seq), valid)
        self.log("train/loss", loss, batch_size=seq.shape[0])
        return loss

    def item_embeddings(self) -> torch.Tensor:
        return self.net.item_emb.weight[item_rows(self.num_items)]  # (I, D)

    def scores_from(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net.encode(x)  # the history, most recent last
        return self.net.logits(h[:, -1])  # (B, I): what follows the last item

    def score_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        seen = dense_rows(batch["input_indptr"], batch["input_indices"], self.num_items)
        return self.scores_from(batch["seq"]), seen

    def configure_optimizers(self) -> torch.optim.Optimizer:
        fused = self.device.type == "cuda"  # one launch for every tensor (see BERT4Rec)
        return torch.optim.AdamW(
            self.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=fused
        )
