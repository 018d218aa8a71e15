"""BERT4Rec: bidirectional transformer over a user's item sequence, trained by masked-item
prediction (a Cloze task).

Sun, Liu, Wu, Pei, Lin, Ou, Jiang. "BERT4Rec: Sequential Recommendation with Bidirectional
Encoder Representations from Transformer", CIKM 2019, https://arxiv.org/abs/1904.06690.

Tokens are the sequence views' (:mod:`lightrec.data.sequences`: 0 pads, item + 1, [MASK]
after the last item). Sequences are left-padded, so the most recent item sits in the last
column; to score the next item the model reads the history with [MASK] appended. The
masking is batch preparation (:func:`mask_items`, applied in ``on_after_batch_transfer``,
on the device), not part of the network.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from lightrec.data.batches import SEQUENCE, dense_rows
from lightrec.data.sequences import PAD, append_mask, item_rows, mask_token, to_items, vocab_size
from lightrec.models.base import RecommenderModule
from lightrec.models.losses import LossName, Negatives, NextItemLoss, training_item_counts
from lightrec.models.transformer import Block, dropout, init_weights
from lightrec.params import (
    NonNegativeFloat,
    OpenFraction,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
)

IGNORE = -100


def mask_items(
    seq: torch.Tensor,
    mask_prob: float,
    mask_token: int,
    last_item_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a batch of left-padded sequences for the Cloze task.

    Each non-pad position is masked with probability ``mask_prob``, at least one per
    sequence (a random non-pad position when none was drawn). With ``last_item_prob``, a
    sequence is instead masked at its last item only (what inference sees). Returns
    ``(inputs, labels)``: inputs with [MASK] at masked positions, labels holding the
    original item (1-based) there and ``-100`` everywhere else (pad is never a target,
    [MASK] never a label).

    >>> seq = torch.tensor([[0, 0, 3, 4, 5], [0, 6, 7, 8, 9]])
    >>> inp, lab = mask_items(seq, mask_prob=0.0, mask_token=99, last_item_prob=1.0)
    >>> inp.tolist()
    [[0, 0, 3, 4, 99], [0, 6, 7, 8, 99]]
    >>> lab.tolist()
    [[-100, -100, -100, -100, 5], [-100, -100, -100, -100, 9]]
    """
    real = seq != PAD
    draw = torch.rand(seq.shape, device=seq.device, generator=generator)
    masked = (draw < mask_prob) & real
    # at least one mask per sequence: the real position with the smallest draw (computed
    # for every row, without a data-dependent branch, so the GPU never waits on the host)
    none = ~masked.any(dim=1, keepdim=True)  # (B, 1)
    first = torch.where(real, draw, torch.full_like(draw, 2.0)).argmin(dim=1, keepdim=True)
    pick = torch.zeros_like(masked).scatter_(1, first, True) & real
    masked = masked | (none & pick)
    if last_item_prob > 0:
        last_only = torch.rand(seq.shape[0], 1, device=seq.device, generator=generator)
        last_only = last_only < last_item_prob  # (B, 1)
        at_last = torch.zeros_like(masked)
        at_last[:, -1] = real[:, -1]
        masked = torch.where(last_only, at_last, masked)
    inputs = seq.masked_fill(masked, mask_token)
    labels = seq.masked_fill(~masked, IGNORE)
    return inputs, labels


class BERT4RecNet(nn.Module):
    """Embeddings, transformer body and the tied output layer.

    Args:
        num_items: catalogue size; the embedding table has a row per token.
        max_len: sequence length (learned positions).
        hidden_size, num_layers, num_heads, dropout: the transformer.
        attn_dropout: dropout on the attention weights; None means ``dropout`` (BERT's
            choice). On a CPU it is most of a training step's time: drawing a mask of
            batch x heads x max_len x max_len numbers per layer.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        dropout: float,
        attn_dropout: float | None = None,
    ) -> None:
        super().__init__()
        self.num_items = num_items
        self.item_emb = nn.Embedding(vocab_size(num_items), hidden_size, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, hidden_size)
        self.ln = nn.LayerNorm(hidden_size)
        self.dropout = dropout
        self.blocks = nn.ModuleList(
            Block(
                hidden_size, num_heads, dropout, dropout if attn_dropout is None else attn_dropout
            )
            for _ in range(num_layers)
        )
        # BERT's prediction head: a GELU projection, then scores against the item table
        self.head = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.LayerNorm(hidden_size)
        )
        self.out_bias = nn.Parameter(torch.zeros(num_items))
        self.apply(init_weights)

    def encode(
        self, seq: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Hidden states (B, L, D) and, if asked, attention weights per layer (B, H, L, L)."""
        attend = (seq != PAD)[:, None, None, :]  # (B, 1, 1, L): every real position, both ways
        pos = torch.arange(seq.shape[1], device=seq.device)
        h = dropout(self.ln(self.item_emb(seq) + self.pos_emb(pos)), self.dropout, self.training)
        maps = []
        for block in self.blocks:
            h, w = block(h, attend, need_weights)
            if w is not None:
                maps.append(w)
        return h, maps

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores over the ``num_items`` real items for hidden states (N, D): tied to the
        item rows of the token embedding, plus a bias."""
        return self.head(h) @ self.item_emb.weight[item_rows(self.num_items)].t() + self.out_bias

    def item_logits(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores (B, L, K) of the hidden states (B, L, D) of B sequences for each
        sequence's own items (B, K) alone."""
        emb = self.item_emb(items + 1)  # token = item + 1
        return torch.einsum("bld,bkd->blk", self.head(h), emb) + self.out_bias[items][:, None]

    def forward(self, seq: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_items) at the ``positions`` (B, L) bool mask only: never for
        every position, which would cost B x L x num_items."""
        h, _ = self.encode(seq)
        return self.logits(h[positions])  # (N, I)

    @torch.no_grad()
    def attention_maps(self, seq: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer, each (B, heads, L, L), rows = queries."""
        return self.encode(seq, need_weights=True)[1]


class BERT4Rec(RecommenderModule):
    """LightningModule: Cloze training and last-position scoring around :class:`BERT4RecNet`.

    Args:
        num_items: filled in from the data module.
        max_len, hidden_size, num_layers, num_heads, dropout, attn_dropout: see
            :class:`BERT4RecNet`.
        mask_prob: share of positions masked per training sequence.
        last_item_prob: share of training sequences masked at the last item only.
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
        attn_dropout: Probability | None,
        mask_prob: OpenFraction,
        last_item_prob: Annotated[float, Range(0.0, 1.0)],
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
        self.next_item_loss = NextItemLoss(loss, num_items, num_negatives, negatives)
        self.net = BERT4RecNet(
            num_items, max_len, hidden_size, num_layers, num_heads, dropout, attn_dropout
        )
        self.mask_token = mask_token(num_items)
        self.mask_prob = mask_prob
        self.last_item_prob = last_item_prob
        self.lr = lr
        self.weight_decay = weight_decay

    # (Lightning warns whenever a module overrides this hook while a DataModule is in use:
    # masking here, on the device after the copy, is on purpose; lightrec.utils.quiet silences it)
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Batch preparation on the device: Cloze masking of training batches."""
        if self.trainer is not None and self.trainer.training:
            batch["seq"], batch["labels"] = mask_items(
                batch["seq"], self.mask_prob, self.mask_token, self.last_item_prob
            )
        return batch

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = batch["labels"]
        h, _ = self.net.encode(batch["seq"])
        loss = self.next_item_loss(self.net, h, to_items(labels), labels != IGNORE)
        self.log("train/loss", loss, batch_size=batch["seq"].shape[0])
        return loss

    def on_fit_start(self) -> None:
        if self.next_item_loss.negatives == "popularity":
            counts = training_item_counts(self.trainer, self.num_items)
            self.next_item_loss.set_counts(counts)

    def item_embeddings(self) -> torch.Tensor:
        return self.net.item_emb.weight[item_rows(self.num_items)]  # (I, D)

    def query(self, seq: torch.Tensor) -> torch.Tensor:
        """What the model reads to predict the next item: the history, then [MASK]."""
        return append_mask(seq, self.num_items)

    def scores_from(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.query(x)  # (B, L), [MASK] in the last column
        positions = torch.zeros_like(seq, dtype=torch.bool)
        positions[:, -1] = True
        return self.net(seq, positions)  # (B, I)

    def score_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        seen = dense_rows(batch["input_indptr"], batch["input_indices"], self.num_items)
        return self.scores_from(batch["seq"]), seen

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # the fused kernel updates every tensor in one launch: this small model is launch-bound
        # on a GPU, where it made an epoch measurably faster (docs/BENCHMARKS.md)
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(
            self.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=fused
        )
