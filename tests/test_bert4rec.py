"""BERT4Rec: masking, tied output, attention maps, learning a sequential rule, runs."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import build_model, compose_cfg, cpu_overrides, dm_for
from lightrec.data.sequences import sequence_matrix
from lightrec.models.bert4rec import IGNORE, BERT4RecNet, mask_items
from lightrec.serving import predict
from lightrec.training import fit as train

MASK = 99


def padded_batch(n=400, length=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, 50, (n, length), generator=g)
    lengths = torch.randint(1, length + 1, (n,), generator=g)
    pad = torch.arange(length)[None, :] < (length - lengths)[:, None]  # left padding
    return seq.masked_fill(pad, 0)


def test_masking_rate_at_least_one_and_never_pad():
    seq = padded_batch()
    g = torch.Generator().manual_seed(1)
    inp, lab = mask_items(seq, mask_prob=0.2, mask_token=MASK, generator=g)
    masked = lab != IGNORE
    real = seq > 0
    assert masked.any(dim=1).all()  # at least one mask per sequence
    assert not (masked & ~real).any()  # pad never masked
    assert (inp[masked] == MASK).all() and (inp[~masked] == seq[~masked]).all()
    assert torch.equal(lab[masked], seq[masked])  # targets are the original items
    assert not (lab == MASK).any()  # [MASK] never a target
    rate = masked.sum().item() / real.sum().item()
    assert 0.17 < rate < 0.25  # 0.2, a little more from the at-least-one rule


def test_last_item_masking_option():
    seq = padded_batch()
    inp, lab = mask_items(seq, mask_prob=0.2, mask_token=MASK, last_item_prob=1.0)
    assert ((lab != IGNORE).sum(dim=1) == 1).all()
    assert (inp[:, -1] == MASK).all() and torch.equal(lab[:, -1], seq[:, -1])
    g = torch.Generator().manual_seed(0)
    _, lab = mask_items(seq, mask_prob=0.2, mask_token=MASK, last_item_prob=0.5, generator=g)
    only_last = ((lab != IGNORE).sum(dim=1) == 1) & (lab[:, -1] != IGNORE)
    assert 0.4 < only_last.float().mean() < 0.75


def test_output_layer_is_tied_to_the_item_embedding():
    torch.manual_seed(0)
    net = BERT4RecNet(
        num_items=30, max_len=8, hidden_size=16, num_layers=1, num_heads=2, dropout=0.0
    ).eval()
    h = torch.randn(5, 16)
    expected = net.head(h) @ net.item_emb.weight[1:31].t() + net.out_bias
    assert torch.allclose(net.logits(h), expected)
    with torch.no_grad():
        # a random direction: a constant shift would vanish against the head's LayerNorm output,
        # whose features sum to zero
        net.item_emb.weight[7] += torch.randn(16)  # item index 6's embedding row
    changed = net.logits(h)
    assert not torch.allclose(changed[:, 6], expected[:, 6])
    assert torch.allclose(changed[:, 5], expected[:, 5])
    assert changed.shape == (5, 30)  # pad and [MASK] are never scored


def test_logits_only_at_masked_positions():
    net = BERT4RecNet(
        num_items=30, max_len=8, hidden_size=16, num_layers=1, num_heads=2, dropout=0.0
    )
    seq = torch.randint(1, 31, (4, 8))
    positions = torch.zeros(4, 8, dtype=torch.bool)
    positions[0, 3] = positions[2, 7] = True
    assert net(seq, positions).shape == (2, 30)


def test_attention_maps_every_layer_and_head():
    net = BERT4RecNet(
        num_items=30, max_len=8, hidden_size=16, num_layers=3, num_heads=4, dropout=0.1
    ).eval()
    seq = torch.tensor([[0, 0, 0, 4, 5, 6, 7, 31], [1, 2, 3, 4, 5, 6, 7, 31]])
    maps = net.attention_maps(seq)
    assert len(maps) == 3 and all(m.shape == (2, 4, 8, 8) for m in maps)
    for m in maps:
        assert torch.allclose(m.sum(-1), torch.ones(2, 4, 8))  # rows are distributions
        assert (m[0, :, :, :3] == 0).all()  # nobody attends to padding
    # the weights path and the fused attention path give the same hidden states
    h_fused, _ = net.encode(seq)
    h_weights, _ = net.encode(seq, need_weights=True)
    assert torch.allclose(h_fused, h_weights, atol=1e-5)


def test_learns_item_i_is_followed_by_i_plus_one():
    torch.manual_seed(0)
    n_items, length = 20, 10
    starts = torch.randint(1, n_items - length + 2, (256,))
    seq = starts[:, None] + torch.arange(length)[None, :]  # 1-based ids, always i -> i+1
    model = build_model(
        "bert4rec_v2",
        num_items=n_items,
        max_len=length,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        dropout=0.0,
        mask_prob=0.3,
        last_item_prob=0.3,
        lr=3e-3,
        weight_decay=0.0,
    )
    opt = model.configure_optimizers()
    losses = []
    for _ in range(300):
        inp, lab = mask_items(seq, 0.3, n_items + 1, 0.3)
        pos = lab != IGNORE
        loss = F.cross_entropy(model.net(inp, pos), lab[pos] - 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.median(losses[-20:]) < 0.2 * np.median(losses[:20])
    model.eval()
    test = seq[:64].clone()
    test[:, -1] = n_items + 1  # predict the last item from the ones before it
    pos = torch.zeros_like(test, dtype=torch.bool)
    pos[:, -1] = True
    top1 = model.net(test, pos).argmax(dim=1) + 1
    assert (top1 == seq[:64, -1]).float().mean() > 0.95


def test_sequence_view_shares_the_split(tiny_csv, tmp_path):
    dm = dm_for(tiny_csv, tmp_path, view="sequence", max_len=6, holdout="valid_and_test")
    u = 3
    train_items = dm.train_csr[u].indices  # time order
    assert dm.train_seq[u].tolist() == (train_items[-6:] + 1).tolist()
    assert dm.valid_seq[u].tolist() == dm.train_seq[u].tolist()  # validation reads training rows
    test_hist = np.concatenate([train_items, dm.valid_csr[u].indices])
    assert dm.test_seq[u].tolist() == (test_hist[-6:] + 1).tolist()
    # what BERT4Rec reads to score the next item: the last 5 of them, then [MASK]
    model = build_model("bert4rec_v2", num_items=dm.num_items, max_len=6)
    query = model.query(torch.from_numpy(dm.test_seq[u : u + 1]))[0].tolist()
    assert query == (test_hist[-5:] + 1).tolist() + [dm.num_items + 1]


def test_sequence_matrix_matches_a_loop():
    rng = np.random.default_rng(0)
    user = np.sort(rng.integers(0, 30, 500))
    item = rng.integers(0, 40, 500)
    got = sequence_matrix(user, item, np.ones(500, bool), 30, 7)
    for u in range(30):
        hist = list(item[user == u][-7:] + 1)
        assert got[u].tolist() == [0] * (7 - len(hist)) + hist


def bert_overrides(tmp_path, csv, *extra):
    return [
        *cpu_overrides(tmp_path, csv),
        "data.max_len=8",
        "model.hidden_size=16",
        "model.num_layers=1",
        "trainer.min_epochs=1",
        *extra,
    ]


def test_train_predict_and_reload(tmp_path, tiny_csv):
    run_dir = tmp_path / "saved" / "hydra_logs" / "bert4rec_v2" / "d" / "t"
    cfg = compose_cfg("bert4rec_v2", bert_overrides(tmp_path, tiny_csv), run_dir)
    score = train.run(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert score == metrics["val"]["ndcg@10"]
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert state["hyper_parameters"]["max_len"] == 8
    first = pd.read_csv(predict.run(cfg))
    assert (first.groupby("user").size() == 10).all()
    log = pd.read_csv(tiny_csv)
    seen = set(zip(log.user, log.item, strict=True))
    assert not any((u, i) in seen for u, i in zip(first.user, first.item, strict=True))
    second = pd.read_csv(predict.run(cfg))  # save -> load -> identical scores
    pd.testing.assert_frame_equal(first, second)


@pytest.mark.parametrize("precision", ["bf16-mixed"])
def test_mixed_precision_switch(tmp_path, tiny_csv, precision):
    run_dir = tmp_path / "run"
    cfg = compose_cfg(
        "bert4rec_v2", bert_overrides(tmp_path, tiny_csv, f"trainer.precision={precision}"), run_dir
    )
    score = train.run(cfg)
    assert np.isfinite(score)
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_free_heap_pages_are_returned_to_the_os():
    """What keeps a long CPU run's memory flat (docs/BENCHMARKS.md): after freeing many
    small tensors, a trim gives their pages back."""
    from lightrec.utils.memory import release_free_memory

    def rss_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    keep = [torch.ones(1024 * 15) for _ in range(4000)]  # ~240 MB in 60 KB blocks (heap)
    del keep[:-1]  # free all but the last, so the heap top stays pinned
    before = rss_mb()
    assert release_free_memory()
    assert rss_mb() < before - 30  # without the trim it does not move


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_cpu_dropout_is_inverted_dropout(p):
    from lightrec.models.transformer import dropout

    x = torch.ones(200, 500)
    torch.manual_seed(0)
    y = dropout(x, p, training=True)
    zero = (y == 0).float().mean().item()
    assert abs(zero - p) < 0.01
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 0.02  # expectation preserved
    assert dropout(x, p, training=False) is x and dropout(x, 0.0, training=True) is x
