"""What every recommender LightningModule shares: full-ranking evaluation.

A subclass implements ``score_batch(batch) -> (scores (B, I), seen (B, I))`` (scores for
every item, and the items to exclude)
and its own ``training_step``; validation and test are the same step here, logged as
``val/recall@10``, ``val/ndcg@10``, ``test/...``. Metric sums are reduced across processes
before the division, so the numbers are exact under data parallelism.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from lightrec.data.batches import dense_rows
from lightrec.metrics import MetricAccumulator, exclude_seen


class RecommenderModule(pl.LightningModule):
    def __init__(self, num_items: int, eval_ks: list[int], exclude_seen: bool = True) -> None:
        super().__init__()
        self.num_items = num_items
        self.eval_ks = list(eval_ks)
        self.exclude_seen = exclude_seen
        self._acc = {
            "val": MetricAccumulator(self.eval_ks),
            "test": MetricAccumulator(self.eval_ks),
        }

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        scores, seen = self.score_batch(batch)
        targets = dense_rows(batch["target_indptr"], batch["target_indices"], self.num_items)
        scores = scores.float()
        if self.exclude_seen:  # eval.exclude_seen: rank only items the user has not seen
            scores = exclude_seen(scores, seen)
        self._acc[stage].update(scores, targets)

    def _eval_epoch_end(self, stage: str) -> None:
        means = self._acc[stage].compute(
            reduce=lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")
        )
        self._acc[stage].reset()
        for name, value in means.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == f"ndcg@{self.eval_ks[0]}")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
