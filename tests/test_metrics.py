"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from lightrec.metrics import MetricAccumulator, exclude_seen, topk_metric_sums


def test_recall_divides_by_min_k_and_heldout():
    # 4 held-out items, K=2, both top items hit: recall 1 (competition definition), not 0.5
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    targets = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    r = topk_metric_sums(scores, targets, [2, 5])
    assert r["recall@2"].item() == pytest.approx(1.0)
    assert r["recall@5"].item() == pytest.approx(1.0)  # 4 hits / min(5, 4)
    assert r["ndcg@2"].item() == pytest.approx(1.0)


def test_ndcg_by_hand():
    # one target at rank 3 (1-based): DCG = 1/log2(4) = 0.5, IDCG = 1
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    targets = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    r = topk_metric_sums(scores, targets, [3, 2])
    assert r["ndcg@3"].item() == pytest.approx(0.5)
    assert r["ndcg@2"].item() == 0.0 and r["hit@2"].item() == 0.0
    # two targets at ranks 1 and 3, K=3: DCG = 1 + 0.5; IDCG = 1 + 1/log2(3)
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    r = topk_metric_sums(scores, targets, [3])
    assert r["ndcg@3"].item() == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert r["recall@3"].item() == pytest.approx(1.0)


def test_seen_items_never_count_and_users_without_targets_are_skipped():
    scores = torch.tensor([[9.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    seen = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    r = topk_metric_sums(exclude_seen(scores, seen), targets, [1])
    assert r["users"].item() == 1
    assert r["hit@1"].item() == 1.0  # item 0 (seen, best raw score) was excluded


def test_accumulator_over_batches_equals_one_batch():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 20, generator=g)
    targets = (torch.rand(50, 20, generator=g) < 0.15).float()
    whole = MetricAccumulator([5, 10], 20)
    whole.update(scores, targets)
    parts = MetricAccumulator([5, 10], 20)
    for i in range(0, 50, 7):
        parts.update(scores[i : i + 7], targets[i : i + 7])
    a, b = whole.compute(), parts.compute()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].item() == pytest.approx(b[k].item())


def test_matches_a_plain_python_reference():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(30, 15, generator=g)
    targets = (torch.rand(30, 15, generator=g) < 0.2).float()
    k = 4
    rec, ndcg, n = 0.0, 0.0, 0
    for s, t in zip(scores.tolist(), targets.tolist(), strict=True):
        pos = {j for j, v in enumerate(t) if v}
        if not pos:
            continue
        n += 1
        top = sorted(range(len(s)), key=lambda j: -s[j])[:k]
        hits = [j in pos for j in top]
        m = min(k, len(pos))
        rec += sum(hits) / m
        ndcg += sum(h / math.log2(r + 2) for r, h in enumerate(hits)) / sum(
            1 / math.log2(r + 2) for r in range(m)
        )
    acc = MetricAccumulator([k], 15)
    acc.update(scores, targets)
    out = acc.compute()
    assert out[f"recall@{k}"].item() == pytest.approx(rec / n, abs=1e-6)
    assert out[f"ndcg@{k}"].item() == pytest.approx(ndcg / n, abs=1e-6)


def test_coverage_counts_distinct_items_in_top_k():
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    targets = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]])  # user 3 skipped
    acc = MetricAccumulator([1, 2], 4)
    acc.update(scores, targets)
    out = acc.compute()
    assert out["coverage@1"].item() == pytest.approx(0.25)  # only item 0
    assert out["coverage@2"].item() == pytest.approx(0.5)  # items 0 and 1


def test_an_empty_accumulator_still_has_every_sum():
    """Under data parallelism every process must join each reduction, scored users or not."""
    acc = MetricAccumulator([10], 7)
    seen = []
    out = acc.compute(reduce=lambda t: seen.append(t) or t)
    assert len(seen) == 1 + 3 + 1  # users, recall/ndcg/hit, appearances
    assert out["recall@10"].item() == 0.0 and out["coverage@10"].item() == 0.0
