"""MultiVAE: input order, KL schedule, eval determinism, learning."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers import build_model
from lightrec.models.multi_vae import MultiVAENet, kl_weight


def capture_encoder_input(net: MultiVAENet, x: torch.Tensor) -> torch.Tensor:
    seen = {}
    hook = net.encoder[0].register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    net(x)
    hook.remove()
    return seen["x"]


def test_dropout_then_l2_normalisation():
    torch.manual_seed(0)
    net = MultiVAENet(num_items=50, hidden_dims=[16, 8], dropout=0.5).train()
    x = (torch.rand(64, 50) < 0.3).float()
    h = capture_encoder_input(net, x)
    norms = h.norm(dim=1)
    nonzero = norms > 0
    # every row the encoder sees has unit length, whatever dropout removed
    assert torch.allclose(norms[nonzero], torch.ones_like(norms[nonzero]), atol=1e-5)

    # the other order (normalise, then dropout) lets dropout's 1/(1-p) rescaling through:
    torch.manual_seed(0)
    wrong = F.dropout(F.normalize(x, dim=1), p=0.5, training=True).norm(dim=1)
    assert (wrong[wrong > 0] - 1).abs().max() > 0.1


def test_kl_weight_rises_linearly_to_the_cap():
    assert kl_weight(0, 0.2, 20000) == 0.0
    assert kl_weight(10000, 0.2, 20000) == 0.1
    assert kl_weight(20000, 0.2, 20000) == 0.2
    assert kl_weight(10**6, 0.2, 20000) == 0.2


def test_eval_uses_the_mean_and_is_deterministic():
    torch.manual_seed(0)
    net = MultiVAENet(num_items=30, hidden_dims=[12, 4], dropout=0.5)
    x = (torch.rand(5, 30) < 0.3).float()
    net.eval()
    a, mu, _ = net(x)
    b, _, _ = net(x)
    assert torch.equal(a, b)
    assert torch.allclose(a, net.decode(mu))
    net.train()
    c, _, _ = net(x)
    assert not torch.allclose(a, c)


def test_learns_a_block_structure():
    """Two groups of users, each liking its own half of the catalogue: after training,
    the held-out half-row is ranked above the other group's items."""
    torch.manual_seed(0)
    n_items = 40
    groups = torch.arange(200) % 2
    x = torch.zeros(200, n_items)
    for u, gr in enumerate(groups.tolist()):
        items = torch.randperm(20)[:8] + 20 * gr
        x[u, items] = 1.0
    model = build_model(
        "multi_vae_v2",
        num_items=n_items,
        hidden_dims=[32, 8],
        dropout=0.3,
        kl_cap=0.1,
        anneal_steps=100,
        lr=1e-2,
    )
    opt = model.configure_optimizers()
    losses = []
    for _ in range(150):
        logits, mu, logvar = model(x)
        recon, kl = model.loss_parts(logits, x, mu, logvar)
        loss = recon + 0.1 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    model.eval()
    scores = model(x)[0]
    own = torch.where(groups[:, None] == (torch.arange(n_items) >= 20)[None, :], scores, -1e9)
    other = torch.where(groups[:, None] != (torch.arange(n_items) >= 20)[None, :], scores, -1e9)
    assert (own.max(1).values > other.max(1).values).float().mean() > 0.95
