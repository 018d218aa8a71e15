"""The sequence models' sampled losses (lightrec.models.losses): each loss against a hand
computation, sampled softmax over every other item equal to full cross-entropy, negatives
drawn on the device in proportion to popularity, and SASRec / BERT4Rec learning with each
loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import build_model, check_submission, compose_cfg, cpu_overrides, only_metrics
from lightrec.models.losses import NextItemLoss, sampled_softmax_loss
from lightrec.serving import predict
from lightrec.training import fit as train


def test_sampled_softmax_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.5, 3.0], [0.1, 0.2, -1.0, 0.0]])
    log_q = torch.log(torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.1, 0.3, 0.3, 0.3]]))
    masked = torch.tensor([[False, False, True], [False, False, False]])
    x = (logits - log_q).numpy().astype(np.float64)
    row0 = -(x[0, 0] - np.log(np.exp(x[0, :3]).sum()))  # the masked negative left out
    row1 = -(x[1, 0] - np.log(np.exp(x[1]).sum()))
    got = sampled_softmax_loss(logits, log_q, masked).item()
    assert got == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_sampled_softmax_over_every_other_item_is_full_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 7), torch.tensor([0, 3, 6, 2, 2])
    others = torch.stack([torch.cat([torch.arange(t), torch.arange(t + 1, 7)]) for t in targets])
    chosen = torch.gather(logits, 1, torch.cat([targets[:, None], others], 1))
    assert sampled_softmax_loss(chosen).item() == pytest.approx(
        F.cross_entropy(logits, targets).item(), rel=1e-6
    )


def test_popularity_negatives_follow_the_counts_and_uniform_ones_do_not():
    loss = NextItemLoss("sampled_softmax", 4, 1000, "popularity")
    loss.set_counts(torch.tensor([0, 1, 2, 96]))
    drawn = loss.sample(100, torch.device("cpu"))
    assert drawn.shape == (100, 1000) and drawn.device.type == "cpu"
    share = torch.bincount(drawn.ravel(), minlength=4).double() / drawn.numel()
    assert share.tolist() == pytest.approx([0.01, 0.02, 0.03, 0.94], abs=0.005)
    uniform = NextItemLoss("sampled_softmax", 4, 1000, "uniform").sample(100, torch.device("cpu"))
    assert (torch.bincount(uniform.ravel()) / uniform.numel()).tolist() == pytest.approx(
        [0.25] * 4, abs=0.01
    )


class _Net(torch.nn.Module):
    """The two scoring methods a sequence net offers the loss, over a random table."""

    def __init__(self, num_items: int, dim: int) -> None:
        super().__init__()
        self.emb = torch.nn.Parameter(torch.randn(num_items, dim))

    def logits(self, h):
        return h @ self.emb.t()

    def item_logits(self, h, items):
        return torch.einsum("bld,bkd->blk", h, self.emb[items])


@pytest.mark.parametrize(
    ("name", "negatives"),
    [("ce", "uniform"), ("sampled_softmax", "uniform"), ("sampled_softmax", "popularity")],
)  # fmt: skip
def test_padding_positions_are_weighed_out_exactly(name, negatives):
    """Every position of a (B, L) batch is scored and the padding weighed out (no wait for
    the device): what padding positions hold never changes the loss, and with one position
    per sequence the loss is that of the rows alone."""
    torch.manual_seed(0)
    net, loss = _Net(12, 8), NextItemLoss(name, 12, 5, negatives)
    loss.set_counts(torch.arange(12))
    h, targets = torch.randn(3, 6, 8), torch.randint(12, (3, 6))
    valid = torch.rand(3, 6) > 0.4
    values = []
    for fill in (0.0, 1e4):  # padding holds anything: a huge state, no item (-1)
        torch.manual_seed(1)
        h_pad = torch.where(valid[..., None], h, torch.full_like(h, fill))
        t_pad = torch.where(valid, targets, torch.full_like(targets, -1))
        values.append(loss(net, h_pad, t_pad, valid).item())
    assert np.isfinite(values[0]) and values[0] == pytest.approx(values[1], rel=1e-6)
    torch.manual_seed(1)
    rows = loss(net, h[:, 0], targets[:, 0])
    torch.manual_seed(1)
    first = loss(net, h[:, :1], targets[:, :1], torch.ones(3, 1, dtype=torch.bool))
    assert rows.item() == pytest.approx(first.item(), rel=1e-6)


@pytest.mark.parametrize("loss", ["sampled_softmax"])
@pytest.mark.parametrize("config", ["sasrec", "bert4rec_v2"])
def test_the_sequence_models_learn_with_a_sampled_loss(config, loss):
    """Item i is always followed by i + 1: with 8 negatives out of 30 items the model
    learns it (the training loss falls by more than half, and it predicts the next item)."""
    torch.manual_seed(0)
    n_items, length = 30, 10
    starts = torch.randint(1, n_items - length + 2, (256,))
    seq = starts[:, None] + torch.arange(length)[None, :]
    extra = {"mask_prob": 0.3, "last_item_prob": 0.3} if config == "bert4rec_v2" else {}
    model = build_model(
        config,
        num_items=n_items,
        max_len=length,
        hidden_size=32,
        dropout=0.0,
        lr=3e-3,
        weight_decay=0.0,
        loss=loss,
        num_negatives=8,
        **extra,
    )
    opt = model.configure_optimizers()
    losses = []
    for _ in range(300):  # gBCE (t = 0.75) plateaus for ~200 steps here before it learns
        batch = {"seq": seq.clone()}
        if config == "bert4rec_v2":
            from lightrec.models.bert4rec import mask_items

            batch["seq"], batch["labels"] = mask_items(seq, 0.3, model.mask_token, 0.3)
        step = model.training_step(batch, 0)
        opt.zero_grad()
        step.backward()
        opt.step()
        losses.append(step.item())
    assert np.median(losses[-10:]) < 0.5 * np.median(losses[:10])
    model.eval()
    with torch.no_grad():
        top1 = model.scores_from(F.pad(seq[:64, :-1], (1, 0))).argmax(dim=1) + 1  # tokens
    assert (top1 == seq[:64, -1]).float().mean() > 0.5  # chance: 1 in 29


@pytest.mark.parametrize("loss", ["sampled_softmax model.negatives=popularity"])
def test_a_run_with_a_sampled_loss_trains_and_predicts(tmp_path, tiny_csv, loss):
    name, *more = loss.split()
    run_dir = tmp_path / "saved" / "hydra_logs" / "sasrec" / "d" / "t"
    overrides = [
        *cpu_overrides(tmp_path, tiny_csv),
        "data.max_len=8",
        "model.hidden_size=16",
        "model.num_layers=1",
        f"model.loss={name}",
        "model.num_negatives=5",
        *more,
    ]
    cfg = compose_cfg("sasrec", overrides, run_dir)
    result = train.fit(cfg)
    metrics = only_metrics(tmp_path / "saved" / "hydra_logs")
    assert 0.0 <= metrics["val"]["ndcg@10"] <= 1.0
    assert metrics["val"]["ndcg@10"] == pytest.approx(result.monitored)
    assert result.model.hparams.loss == name  # trained with the loss it was given
    check_submission(predict.run(cfg), pd.read_csv(tiny_csv), k=10)


def test_a_checkpoint_from_before_the_loss_arguments_still_loads(tmp_path, tiny_csv):
    """Runs trained before model.loss existed have no such hyper-parameters: they load as
    the full cross-entropy models they are, and predict the same lists."""
    import pandas as pd

    from lightrec.serving import predict

    run_dir = tmp_path / "saved" / "hydra_logs" / "sasrec" / "d" / "t"
    overrides = [
        *cpu_overrides(tmp_path, tiny_csv),
        "data.max_len=8",
        "model.hidden_size=16",
        "model.num_layers=1",
    ]
    cfg = compose_cfg("sasrec", overrides, run_dir)
    train.fit(cfg)
    before = pd.read_csv(predict.run(cfg))
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)
        for name in ("loss", "num_negatives", "negatives"):
            del state["hyper_parameters"][name]
        state["hyper_parameters"]["gbce_t"] = 0.75  # an argument removed since: dropped
        torch.save(state, ckpt)
    assert pd.read_csv(predict.run(cfg)).equals(before)
