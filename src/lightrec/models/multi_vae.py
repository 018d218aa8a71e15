"""MultiVAE: variational autoencoder with a multinomial likelihood for implicit feedback.

Liang, Krishnan, Hoffman, Jebara. "Variational Autoencoders for Collaborative Filtering",
WWW 2018, https://arxiv.org/abs/1802.05814.

A user's binary item row is dropped out, L2-normalised, encoded to a Gaussian latent
(mu, logvar), sampled (training) or taken at its mean (evaluation), and decoded to logits
over all items. The loss is the multinomial negative log-likelihood plus a KL term whose
weight is annealed linearly with the global step up to a cap ("partial regularisation").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightrec.models.base import RecommenderModule
from lightrec.models.sparse_input import Histories, as_histories, histories, input_layer
from lightrec.params import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
)


class MultiVAENet(nn.Module):
    """The network only: ``num_items -> hidden_dims[:-1] -> (mu, logvar)`` and back.

    Args:
        num_items: catalogue size (input and output width).
        hidden_dims: encoder widths; the last one is the latent size, e.g. ``[600, 200]``.
        dropout: input dropout rate, applied *before* the L2 normalisation.
    """

    def __init__(self, num_items: int, hidden_dims: list[int], dropout: float) -> None:
        super().__init__()
        dims = [num_items, *hidden_dims]
        *enc, latent = dims[1:]
        self.latent_dim = latent
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-2], enc, strict=True))
        self.to_mu_logvar = nn.Linear(dims[-2], 2 * latent)
        back = dims[::-1]  # [latent, ..., num_items]
        self.decoder = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(back[:-1], back[1:], strict=True)
        )
        self.dropout = dropout
        for layer in [*self.encoder, self.to_mu_logvar, *self.decoder]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)

    def encode(self, x: torch.Tensor | Histories) -> tuple[torch.Tensor, torch.Tensor]:
        # Dropout first, then normalise: the encoder always sees unit-length rows, whatever
        # was dropped. (Normalising first would let dropout's 1/(1-p) rescaling through.)
        first, *rest = self.encoder
        p = self.dropout if self.training else 0.0
        h = torch.tanh(input_layer(first, as_histories(x), p, normalise_first=False))
        for layer in rest:
            h = torch.tanh(layer(h))  # (B, H)
        mu, logvar = self.to_mu_logvar(h).chunk(2, dim=1)  # (B, Z) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.decoder[:-1]:
            z = torch.tanh(layer(z))
        return self.decoder[-1](z)  # (B, I) logits

    def forward(
        self, x: torch.Tensor | Histories
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (B, I), mu, logvar of dense rows ``x`` (B, I) or of :class:`Histories`."""
        mu, logvar = self.encode(x)
        if self.training:  # reparameterisation trick
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z), mu, logvar


def kl_weight(step: int, cap: float, anneal_steps: int) -> float:
    """``min(cap, cap * step / anneal_steps)``: linear from 0 to ``cap``, then flat.

    >>> [kl_weight(s, 0.2, 100) for s in (0, 50, 100, 400)]
    [0.0, 0.1, 0.2, 0.2]
    """
    if anneal_steps <= 0:
        return cap
    return min(cap, cap * step / anneal_steps)


class MultiVAE(RecommenderModule):
    """LightningModule: loss, steps, optimiser and logging around :class:`MultiVAENet`.

    Args:
        num_items: filled in from the data module.
        hidden_dims, dropout: see :class:`MultiVAENet`.
        kl_cap: the KL weight's final value (beta).
        anneal_steps: optimiser steps over which the KL weight rises to ``kl_cap``.
        lr, weight_decay: Adam.
        eval_ks: cut-offs of the validation/test metrics.
        exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    def __init__(
        self,
        num_items: PositiveInt,
        hidden_dims: list[PositiveInt],
        dropout: Probability,
        kl_cap: NonNegativeFloat,
        anneal_steps: NonNegativeInt,
        lr: PositiveFloat,
        weight_decay: NonNegativeFloat,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen)
        self.save_hyperparameters()
        self.net = MultiVAENet(num_items, list(hidden_dims), dropout)
        self.kl_cap = kl_cap
        self.anneal_steps = anneal_steps
        self.lr = lr
        self.weight_decay = weight_decay

    def forward(
        self, x: torch.Tensor | Histories
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net(x)

    @staticmethod
    def loss_parts(
        logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Multinomial NLL and KL(q(z|x) || N(0, I)), each averaged over the batch."""
        recon = -(F.log_softmax(logits.float(), dim=1) * x).sum(dim=1).mean()
        mu, logvar = mu.float(), logvar.float()
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
        return recon, kl

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        rows = histories(batch, self.num_items)
        x = rows.dense
        logits, mu, logvar = self.net(rows)
        recon, kl = self.loss_parts(logits, x, mu, logvar)
        beta = self._kl_weight_now()
        loss = recon + beta * kl
        n = x.shape[0]
        self.log("train/loss", loss, batch_size=n)
        self.log("train/recon", recon, batch_size=n)
        self.log("train/kl", kl, batch_size=n)
        self.log("train/kl_weight", beta, batch_size=n)
        return loss

    def item_embeddings(self) -> torch.Tensor:
        last = self.net.decoder[-1]
        assert isinstance(last, nn.Linear)
        return last.weight  # (I, H): each item's row of the last layer

    def on_train_start(self) -> None:
        # the step count on the device, for the KL weight: no Python number becomes a
        # tensor (a host-to-device copy) at every step
        self._step = torch.full((), self.global_step, dtype=torch.float64, device=self.device)

    def _kl_weight_now(self) -> torch.Tensor:
        """:func:`kl_weight` of the current step, as a float32 tensor on the device (computed
        in float64 like the Python function, so the value is the same); advances the step."""
        if self.anneal_steps <= 0:
            beta = torch.full_like(self._step, self.kl_cap)
        else:
            beta = torch.clamp(self.kl_cap * self._step / self.anneal_steps, max=self.kl_cap)
        self._step += 1
        return beta.float()

    def score_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = histories(batch, self.num_items)
        logits, _, _ = self.net(rows)
        return logits, rows.dense

    def configure_optimizers(self) -> torch.optim.Optimizer:
        fused = self.device.type == "cuda"  # one kernel for every tensor's update
        return torch.optim.Adam(
            self.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=fused
        )
