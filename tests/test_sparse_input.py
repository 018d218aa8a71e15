"""The autoencoders' first layer read from a CSR slice's non-zeros: the same function as the
dense product, the same dropout law, and the dense product never computed for such a batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import build_model
from lightrec.data.batches import dense_rows
from lightrec.models.sparse_input import Histories, input_layer


def csr_batch(n_rows: int, n_items: int, density: float, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_rows, n_items, generator=g) < density
    x[0] = False  # an empty history
    indptr = torch.zeros(n_rows + 1, dtype=torch.long)
    indptr[1:] = x.sum(1).cumsum(0)
    indices = x.nonzero()[:, 1]
    return {"input_indptr": indptr, "input_indices": indices}


def both(batch: dict, n_items: int) -> tuple[Histories, Histories]:
    dense = dense_rows(batch["input_indptr"], batch["input_indices"], n_items)
    return Histories(dense, batch["input_indptr"], batch["input_indices"]), Histories(dense)


@pytest.mark.parametrize("normalise_first", [False, True])
def test_the_non_zeros_give_the_dense_product(normalise_first):
    torch.manual_seed(0)
    layer = nn.Linear(40, 7)
    sparse, dense = both(csr_batch(12, 40, 0.2), 40)
    got = input_layer(layer, sparse, 0.0, normalise_first)
    want = input_layer(layer, dense, 0.0, normalise_first)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got[0], layer.bias)  # an empty row: the bias alone
    # and the gradient reaches the layer's weight the same way
    got.sum().backward()
    g_sparse = layer.weight.grad.clone()
    layer.zero_grad()
    want.sum().backward()
    assert torch.allclose(g_sparse, layer.weight.grad, atol=1e-6)


def identity(n: int) -> nn.Linear:
    layer = nn.Linear(n, n)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(n))
        layer.bias.zero_()
    return layer


def test_dropout_then_normalising_gives_unit_rows_of_kept_items():
    """MultiVAE's order: whatever dropout removed, each row the encoder sees has unit length
    and holds only the row's own items; about 1 - p of them are kept."""
    torch.manual_seed(0)
    n = 300
    sparse, _ = both(csr_batch(200, n, 0.1), n)
    h = input_layer(identity(n), sparse, 0.5, normalise_first=False).detach()
    norms = h.norm(dim=1)
    assert torch.allclose(norms[norms > 0], torch.ones_like(norms[norms > 0]), atol=1e-5)
    assert ((h != 0) <= (sparse.dense != 0)).all()
    kept = (h != 0).sum() / (sparse.dense != 0).sum()
    assert 0.45 < kept.item() < 0.55


def test_normalising_then_dropout_keeps_the_rescaling():
    """RecVAE's order: a kept item is worth 1 / sqrt(|row|) / (1 - p)."""
    torch.manual_seed(0)
    n = 300
    sparse, _ = both(csr_batch(200, n, 0.1), n)
    h = input_layer(identity(n), sparse, 0.25, normalise_first=True).detach()
    per_row = sparse.dense.sum(1, keepdim=True).clamp(min=1)
    expected = (1 / per_row.sqrt() / 0.75).expand_as(h)
    assert torch.allclose(h[h != 0], expected[h != 0], atol=1e-6)
    assert 0.7 < ((h != 0).sum() / (sparse.dense != 0).sum()).item() < 0.8


@pytest.mark.parametrize(
    "config,first",
    [
        ("multi_vae_v2", lambda m: m.net.encoder[0]),
        ("recvae", lambda m: m.net.encoder.layers[0]),
    ],
)
def test_a_csr_batch_never_runs_the_dense_product(config, first):
    """A host-built batch (a CSR slice) scores as a dense one does, without calling the
    first layer's dense product; a batch of dense rows (an export, the device path) still
    calls it."""
    torch.manual_seed(0)
    n_items = 60
    extra = {"hidden_dim": 16, "latent_dim": 4} if config == "recvae" else {"hidden_dims": [16, 4]}
    model = build_model(config, num_items=n_items, **extra).eval()
    batch = csr_batch(9, n_items, 0.15)
    calls = []
    hook = first(model).register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        sparse_scores, seen = model.score_batch(batch)
        assert calls == []
        dense_scores = model.scores_from(seen)
    hook.remove()
    assert calls == [1]
    assert torch.allclose(sparse_scores, dense_scores, atol=1e-5)


def test_the_item_table_is_kept_outside_autograd_until_the_weight_changes():
    """Issue 39: the (I, H) copy of the first layer's weight is made once while the weight
    stands still outside autograd (a frozen prior, a decoder pass, validation), and again
    after an optimiser step or a load."""
    from lightrec.models.sparse_input import item_table

    layer = torch.nn.Linear(5, 3)
    with torch.no_grad():
        first = item_table(layer)
        assert item_table(layer) is first  # kept
    assert torch.equal(first, layer.weight.t())
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.ones(1, 5)).sum().backward()
    opt.step()
    with torch.no_grad():
        after_step = item_table(layer)
    assert after_step is not first and torch.equal(after_step, layer.weight.t())
    layer.load_state_dict({"weight": torch.zeros(3, 5), "bias": torch.zeros(3)})
    with torch.no_grad():
        assert torch.equal(item_table(layer), torch.zeros(5, 3))
    grad_table = item_table(layer)  # inside autograd: a new copy, part of the graph
    assert grad_table.requires_grad and grad_table is not item_table(layer)
