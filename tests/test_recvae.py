"""RecVAE: the alternating encoder / decoder passes, the composite prior, learning, a run."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from helpers import build_model, check_submission, compose_cfg, cpu_overrides
from lightrec.models.recvae import RecVAENet, log_normal
from lightrec.serving import predict
from lightrec.training import fit as train


def clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


class Snapshots(pl.Callback):
    """The encoder, decoder and prior-encoder weights at the start and end of every pass."""

    def __init__(self) -> None:
        self.start: list[dict] = []
        self.end: list[dict] = []

    def _snap(self, m) -> dict:
        return {p: clone(getattr(m.net, p)) for p in ("encoder", "decoder", "old_encoder")}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start.append(self._snap(pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.end.append(self._snap(pl_module))


def test_passes_alternate_between_encoder_and_decoder(tmp_path, tiny_csv):
    """With 3 encoder passes and 1 decoder pass: passes 0-2 change the encoder only, pass 3
    the decoder only, and the prior takes a copy of the encoder before pass 3 (and only
    then). Without the alternation (both updated in every pass) this fails."""
    snaps = Snapshots()
    ov = [
        *cpu_overrides(tmp_path, tiny_csv),
        "trainer.max_epochs=5",
        "refit=false",
        "model.hidden_dim=16",
        "model.latent_dim=4",
        "early_stopping.patience=50",
    ]
    train.fit(compose_cfg("recvae", ov, tmp_path / "run"), extra_callbacks=[snaps])
    start, end = snaps.start, snaps.end
    for epoch in (0, 1, 2, 4):  # encoder passes
        assert not same(start[epoch]["encoder"], end[epoch]["encoder"]), epoch
        assert same(start[epoch]["decoder"], end[epoch]["decoder"]), epoch
    assert same(start[3]["encoder"], end[3]["encoder"])  # the decoder pass
    assert not same(start[3]["decoder"], end[3]["decoder"])
    # the prior's encoder: a copy of the encoder taken right before the decoder pass
    # (at its start; the callback's epoch-start hook runs before the module's)
    assert same(end[3]["old_encoder"], end[2]["encoder"])
    assert not same(end[2]["old_encoder"], end[2]["encoder"])
    assert same(start[0]["old_encoder"], end[2]["old_encoder"])  # untouched before that


def test_composite_prior_mixes_three_normals():
    torch.manual_seed(0)
    net = RecVAENet(num_items=12, hidden_dim=8, latent_dim=3).eval()
    x = (torch.rand(5, 12) < 0.4).float()
    z = torch.randn(5, 3)
    mu, logvar = net.old_encoder(x, dropout=0.0)
    zero = torch.zeros_like(z)
    by_hand = torch.log(
        3 / 20 * log_normal(z, zero, zero).exp()
        + 3 / 4 * log_normal(z, mu, logvar).exp()
        + 1 / 10 * log_normal(z, zero, torch.full_like(z, 10.0)).exp()
    )
    assert torch.allclose(net.log_prior(x, z), by_hand, atol=1e-5)


def test_kl_weight_grows_with_the_users_items():
    """gamma x |x_u|: doubling a user's items doubles the weight of its KL term."""
    torch.manual_seed(0)
    model = build_model("recvae", num_items=20, hidden_dim=8, latent_dim=3, gamma=0.1).eval()
    light = torch.zeros(1, 20)
    light[0, :2] = 1.0
    heavy = torch.zeros(1, 20)
    heavy[0, :4] = 1.0
    for x, n in ((light, 2), (heavy, 4)):
        loss, recon, kl = model.loss(x, dropout=0.0)
        assert torch.allclose(loss, recon + 0.1 * n * kl, atol=1e-5)


@pytest.mark.filterwarnings("ignore:You are trying to .self.log")
def test_learns_a_block_structure():
    """Two groups of users, each liking its own half of the catalogue."""
    torch.manual_seed(0)
    n_items = 40
    groups = torch.arange(200) % 2
    x = torch.zeros(200, n_items)
    for u, gr in enumerate(groups.tolist()):
        x[u, torch.randperm(20)[:8] + 20 * gr] = 1.0
    model = build_model(
        "recvae", num_items=n_items, hidden_dim=32, latent_dim=8, lr=1e-2, gamma=0.001
    )
    enc, dec = model.configure_optimizers()
    for epoch in range(60):
        train_encoder = model.phase(epoch) == "encoder"
        if not train_encoder and model.phase(epoch - 1) == "encoder":
            model.net.update_prior()
        opt = enc if train_encoder else dec
        loss, _, _ = model.loss(x, 0.5 if train_encoder else 0.0, encoder_grad=train_encoder)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    batch = {"input_indptr": torch.arange(0, 200 * 8 + 1, 8), "input_indices": x.nonzero()[:, 1]}
    with torch.no_grad():
        scores = model.score_batch(batch)[0]
    own = (torch.arange(n_items) >= 20)[None, :] == groups[:, None]
    assert (
        scores.where(own, -1e9).max(1).values > scores.where(~own, -1e9).max(1).values
    ).float().mean() > 0.95


def test_train_predict_and_refit(tmp_path, tiny_csv):
    run_dir = tmp_path / "saved" / "hydra_logs" / "recvae" / "d" / "t"
    ov = [
        *cpu_overrides(tmp_path, tiny_csv),
        "model.hidden_dim=16",
        "model.latent_dim=4",
        "data.holdout=valid_and_test",
        "trainer.max_epochs=5",
    ]
    cfg = compose_cfg("recvae", ov, run_dir)
    score = train.run(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert score == metrics["val"]["ndcg@10"]
    assert metrics["refit"]["epochs"] == metrics["best_epoch"] + 1
    check_submission(predict.run(cfg), pd.read_csv(tiny_csv), k=10)
