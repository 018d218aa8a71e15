"""SASRec: no position sees the future; it learns a sequential rule; it runs end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import build_model, check_submission, compose_cfg, cpu_overrides
from lightrec.models import sasrec
from lightrec.models.sasrec import SASRecNet, causal_mask
from lightrec.serving import predict
from lightrec.training import fit as train


def net(**kw) -> SASRecNet:
    torch.manual_seed(0)
    args = dict(num_items=30, max_len=10, hidden_size=16, num_layers=2, num_heads=2, dropout=0.0)
    return SASRecNet(**{**args, **kw}).eval()


def test_no_position_sees_the_future():
    """Change the item at position t: every hidden state before t stays exactly the same,
    and the states from t on change."""
    model = net()
    seq = torch.tensor([[0, 0, 3, 7, 9, 2, 11, 4, 8, 5]])
    base = model.encode(seq)
    for t in range(2, 10):
        changed = seq.clone()
        changed[0, t] = 29
        h = model.encode(changed)
        assert torch.equal(h[0, :t], base[0, :t]), t
        assert not torch.allclose(h[0, t:], base[0, t:]), t


def test_the_check_above_fails_with_attention_in_both_directions(monkeypatch):
    """The same check on a model whose mask lets positions see the future: it must fail,
    so the test above really tests the mask."""

    def both_ways(seq):
        real = (seq != 0)[:, None, None, :]
        return real | torch.eye(seq.shape[1], dtype=torch.bool)

    monkeypatch.setattr(sasrec, "causal_mask", both_ways)
    model = net()
    seq = torch.tensor([[0, 0, 3, 7, 9, 2, 11, 4, 8, 5]])
    changed = seq.clone()
    changed[0, 6] = 29
    assert not torch.equal(model.encode(changed)[0, :6], model.encode(seq)[0, :6])


def test_causal_mask_pads_attend_only_to_themselves():
    mask = causal_mask(torch.tensor([[0, 0, 4, 5]]))[0, 0]
    assert mask[:2].int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    assert mask[3].int().tolist() == [0, 0, 1, 1]


def test_learns_item_i_is_followed_by_i_plus_one():
    torch.manual_seed(0)
    n_items, length = 20, 10
    starts = torch.randint(1, n_items - length + 2, (256,))
    seq = starts[:, None] + torch.arange(length)[None, :]  # tokens, always i -> i+1
    model = build_model(
        "sasrec",
        num_items=n_items,
        max_len=length,
        hidden_size=32,
        dropout=0.0,
        lr=3e-3,
        weight_decay=0.0,
    )
    opt = model.configure_optimizers()
    losses = []
    for _ in range(150):
        loss = model.training_step({"seq": seq}, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.median(losses[-10:]) < 0.2 * np.median(losses[:10])
    model.eval()
    history = seq[:64, :-1]  # the first 9 items; the 10th is what comes next
    batch = {
        "seq": F.pad(history, (1, 0)),
        "input_indptr": torch.zeros(65, dtype=torch.long),
        "input_indices": torch.zeros(0, dtype=torch.long),
    }
    with torch.no_grad():
        top1 = model.score_batch(batch)[0].argmax(dim=1) + 1
    assert (top1 == seq[:64, -1]).float().mean() > 0.95


def test_train_predict_and_reload(tmp_path, tiny_csv):
    run_dir = tmp_path / "saved" / "hydra_logs" / "sasrec" / "d" / "t"
    ov = [
        *cpu_overrides(tmp_path, tiny_csv),
        "data.max_len=8",
        "model.hidden_size=16",
        "data.holdout=valid_and_test",
    ]
    cfg = compose_cfg("sasrec", ov, run_dir)
    score = train.run(cfg)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert score == metrics["val"]["ndcg@10"] and "test" in metrics["refit"]
    check_submission(predict.run(cfg), pd.read_csv(tiny_csv), k=10)


@pytest.mark.parametrize("precision", ["bf16-mixed"])
def test_mixed_precision(tmp_path, tiny_csv, precision):
    ov = [
        *cpu_overrides(tmp_path, tiny_csv),
        "data.max_len=8",
        "model.hidden_size=16",
        f"trainer.precision={precision}",
        "refit=false",
    ]
    assert np.isfinite(train.run(compose_cfg("sasrec", ov, tmp_path / "run")))
