"""RecVAE: MultiVAE's successor, with a composite prior, a user-specific KL weight and
alternating encoder / decoder updates.

Shenbin, Alekseev, Tutubalina, Malykh, Nikolenko. "RecVAE: a New Variational Autoencoder
for Top-N Recommendations with Implicit Feedback", WSDM 2020,
https://arxiv.org/abs/1912.11160. What it changes against MultiVAE (models/multi_vae.py):

- a denser encoder: five layers, each fed the sum of all earlier ones, swish activations
  and layer normalisation;
- a composite prior: a mixture of the standard normal, the posterior of the *previous*
  encoder (a frozen copy, refreshed before every decoder pass), and a wide normal;
- the KL weight of a user is ``gamma * |x_u|`` (users with more items are trusted more);
- training alternates: ``enc_epochs`` passes over the users update the encoder (input
  dropout on), then ``dec_epochs`` passes update the decoder (dropout off). Here one
  Lightning epoch is one pass, so validation, early stopping and the refit stage count
  passes, and the schedule repeats with period ``enc_epochs + dec_epochs``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from lightrec.models.base import Batch, RecommenderModule
from lightrec.models.sparse_input import Histories, as_histories, histories, input_layer
from lightrec.params import NonNegativeFloat, PositiveFloat, PositiveInt, Probability

# the paper's composite prior: standard normal, previous posterior, wide normal (logvar 10)
PRIOR_WEIGHTS = (3 / 20, 3 / 4, 1 / 10)
WIDE_LOGVAR = 10.0
LOG_2PI = math.log(2 * math.pi)


def log_normal(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Element-wise log density of N(mu, exp(logvar)) at x."""
    return -0.5 * (logvar + LOG_2PI + (x - mu).pow(2) / logvar.exp())


class Encoder(nn.Module):
    """``num_items -> hidden_dim`` (x5, densely connected, swish + LayerNorm) -> (mu, logvar)."""

    def __init__(self, num_items: int, hidden_dim: int, latent_dim: int, layers: int = 5) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(num_items if i == 0 else hidden_dim, hidden_dim) for i in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim, eps=0.1) for _ in range(layers))
        self.to_mu = nn.Linear(hidden_dim, latent_dim)
        self.to_logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(
        self, x: torch.Tensor | Histories, dropout: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of dense rows ``x`` (B, I) or of :class:`Histories`."""
        # the input normalised to unit length, then dropped out, as in the paper's code
        p = dropout if self.training else 0.0
        (first, first_norm), *rest = zip(self.layers, self.norms, strict=True)
        h = first_norm(F.silu(input_layer(first, as_histories(x), p, normalise_first=True)))
        total = h  # the sum of every earlier layer's output feeds the next one
        for layer, norm in rest:
            h = norm(F.silu(layer(h) + total))  # (B, H)
            total = total + h
        return self.to_mu(h), self.to_logvar(h)


class RecVAENet(nn.Module):
    """Encoder, its frozen previous copy (in the prior), and a linear decoder.

    Args:
        num_items: catalogue size (input and output width).
        hidden_dim: width of the encoder's layers; latent_dim: size of z.
    """

    def __init__(self, num_items: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.encoder = Encoder(num_items, hidden_dim, latent_dim)
        self.old_encoder = Encoder(num_items, hidden_dim, latent_dim).requires_grad_(False)
        self.decoder = nn.Linear(latent_dim, num_items)

    def update_prior(self) -> None:
        """The prior's encoder becomes a frozen copy of the current encoder."""
        self.old_encoder.load_state_dict(copy.deepcopy(self.encoder.state_dict()))

    def log_prior(self, x: torch.Tensor | Histories, z: torch.Tensor) -> torch.Tensor:
        """log p(z | x) of the composite prior, element-wise (B, Z)."""
        old_mu, old_logvar = self.old_encoder(x, dropout=0.0)
        zeros = torch.zeros_like(z)
        parts = (
            log_normal(z, zeros, zeros),
            log_normal(z, old_mu, old_logvar),
            log_normal(z, zeros, torch.full_like(z, WIDE_LOGVAR)),
        )
        weighted = [p + math.log(w) for p, w in zip(parts, PRIOR_WEIGHTS, strict=True)]
        return torch.logsumexp(torch.stack(weighted, dim=-1), dim=-1)

    def forward(
        self, x: torch.Tensor | Histories, dropout: float, encoder_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (B, I), z, mu, logvar; z is sampled in training, the mean otherwise.
        ``encoder_grad=False``: the encoder runs without autograd (a decoder pass, where only
        the decoder is updated)."""
        with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
            mu, logvar = self.encoder(x, dropout)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decoder(z), z, mu, logvar


class RecVAE(RecommenderModule):
    """LightningModule: the alternating schedule, the loss and two Adam optimisers.

    Args:
        num_items: filled in from the data module.
        hidden_dim, latent_dim: see :class:`RecVAENet`.
        dropout: input dropout of the encoder passes (decoder passes use none).
        gamma: the KL weight of a user is ``gamma`` times the user's number of items.
        enc_epochs, dec_epochs: passes of encoder updates, then of decoder updates.
        lr: Adam, for both optimisers.
        eval_ks: cut-offs of the validation/test metrics.
        exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    updates_every_parameter_each_step = False  # encoder passes, then decoder passes

    def __init__(
        self,
        num_items: PositiveInt,
        hidden_dim: PositiveInt,
        latent_dim: PositiveInt,
        dropout: Probability,
        gamma: NonNegativeFloat,
        enc_epochs: PositiveInt,
        dec_epochs: PositiveInt,
        lr: PositiveFloat,
        eval_ks: list[PositiveInt],
        exclude_seen: bool,
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen)
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimisers, one at a time
        self.net = RecVAENet(num_items, hidden_dim, latent_dim)
        self.dropout = dropout
        self.gamma = gamma
        self.enc_epochs = enc_epochs
        self.dec_epochs = dec_epochs
        self.lr = lr

    def phase(self, epoch: int) -> str:
        """``"encoder"`` or ``"decoder"``: which part the pass ``epoch`` updates.

        >>> m = RecVAE.__new__(RecVAE); m.enc_epochs, m.dec_epochs = 3, 1
        >>> [m.phase(e) for e in range(5)]
        ['encoder', 'encoder', 'encoder', 'decoder', 'encoder']
        """
        return (
            "encoder"
            if epoch % (self.enc_epochs + self.dec_epochs) < self.enc_epochs
            else "decoder"
        )

    def on_train_epoch_start(self) -> None:
        # the paper's order: encoder passes, then the prior takes the new encoder, then the
        # decoder passes
        if (
            self.phase(self.current_epoch) == "decoder"
            and self.phase(self.current_epoch - 1) == "encoder"
        ):
            self.net.update_prior()

    def loss(
        self, rows: torch.Tensor | Histories, dropout: float, encoder_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Negative ELBO averaged over the batch, and its two parts."""
        rows = as_histories(rows)
        x = rows.dense
        logits, z, mu, logvar = self.net(rows, dropout, encoder_grad)
        mll = (F.log_softmax(logits.float(), dim=1) * x).sum(dim=1)  # (B,)
        kl = (log_normal(z, mu, logvar) - self.net.log_prior(rows, z)).sum(dim=1)  # (B,)
        weight = self.gamma * x.sum(dim=1)  # (B,): the user-specific KL weight
        return (weight * kl - mll).mean(), -mll.mean(), kl.mean()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        rows = histories(batch, self.num_items)
        optimisers = self.optimizers()
        assert isinstance(optimisers, list)
        enc_opt, dec_opt = optimisers
        encoder = self.phase(self.current_epoch) == "encoder"
        opt = enc_opt if encoder else dec_opt
        loss, recon, kl = self.loss(rows, self.dropout if encoder else 0.0, encoder_grad=encoder)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        n = rows.dense.shape[0]
        self.log("train/loss", loss, batch_size=n)
        self.log("train/recon", recon, batch_size=n)
        self.log("train/kl", kl, batch_size=n)
        return loss.detach()

    def item_embeddings(self) -> torch.Tensor:
        return self.net.decoder.weight  # (I, Z)

    def score_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        rows = histories(batch, self.num_items)
        logits, _, _, _ = self.net(rows, dropout=0.0)
        return logits, rows.dense

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        fused = self.device.type == "cuda"
        return [
            torch.optim.Adam(self.net.encoder.parameters(), lr=self.lr, fused=fused),
            torch.optim.Adam(self.net.decoder.parameters(), lr=self.lr, fused=fused),
        ]
