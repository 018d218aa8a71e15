"""The contracts every recommender LightningModule keeps, and what they share.

:class:`RecommenderModule`: a subclass implements ``score_batch(batch) -> (scores (B, I),
seen (B, I))`` (a score for every item, and the items to exclude) and, unless it is a
:class:`ClosedFormModule`, its own ``training_step`` and ``configure_optimizers``.
Validation and test are the same step for every model, logged as ``val/recall@10``,
``val/ndcg@10``, ``test/...``. Metric sums are reduced across processes before the
division, so the numbers are exact under data parallelism.

:class:`ClosedFormModule`: a model fit in one call on the training matrix
(``fit_closed_form``) whose scores are a function of the user's history row (``scores``);
``lightrec.training.fit`` dispatches on this type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pytorch_lightning as pl
import scipy.sparse as sp
import torch

from lightrec.data.batches import View, dense_rows, history_rows
from lightrec.metrics import MetricAccumulator, exclude_seen

Batch = dict[str, torch.Tensor]


class RecommenderModule(pl.LightningModule, ABC):
    # the data view the model reads (lightrec.data.batches.View); the config's data.view
    # resolves to it, and the config check refuses another
    data_view: ClassVar[View] = "csr"
    # every parameter gets a gradient at every step (what DDP's default assumes); a model
    # that updates a part at a time says False, and trains with find_unused_parameters
    updates_every_parameter_each_step = True

    def __init__(self, num_items: int, eval_ks: list[int], exclude_seen: bool) -> None:
        super().__init__()
        self.num_items = num_items
        self.eval_ks = list(eval_ks)
        self.exclude_seen = exclude_seen
        self._acc = {
            "val": MetricAccumulator(self.eval_ks, num_items),
            "test": MetricAccumulator(self.eval_ks, num_items),
        }

    @abstractmethod
    def score_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, seen)``: scores (B, I) for every item of the catalogue, and the items
        (B, I, non-zero = seen) that must never be recommended to these users."""

    def scores_from(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B, I) from the model's input alone: history rows (B, I) for the CSR view,
        token sequences (B, L) for the sequence view (what an exported scorer computes,
        :mod:`lightrec.serving.export`). A sequence model overrides it."""
        return self.score_batch({"input_dense": x})[0]

    def item_embeddings(self) -> torch.Tensor | None:
        """One vector per item (num_items, D) for TensorBoard's projector, or None when the
        model has no such table."""
        return None

    def _eval_step(self, batch: Batch, stage: str) -> None:
        scores, seen = self.score_batch(batch)
        targets = dense_rows(batch["target_indptr"], batch["target_indices"], self.num_items)
        scores = scores.float()
        if self.exclude_seen:  # eval.exclude_seen: rank only items the user has not seen
            scores = exclude_seen(scores, seen)
        self._acc[stage].update(scores, targets)

    def _eval_epoch_end(self, stage: str) -> None:
        acc = self._acc[stage]
        acc.sums = {k: v.to(self.device) for k, v in acc.sums.items()}  # where the reduce runs
        means = acc.compute(reduce=lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        acc.reset()
        for name, value in means.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == f"ndcg@{self.eval_ks[0]}")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")


class ClosedFormModule(RecommenderModule):
    """A recommender fit in one call on the training matrix instead of by gradient steps."""

    # knobs any positive value of which is valid (a regulariser): an in-run tuning whose
    # best is its grid's edge looks past it (lightrec.training.tune.search)
    OPEN_ENDED: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        """Fit on the binary (users, items) training matrix, on this module's device."""

    @abstractmethod
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scores (B, I) for history rows ``x`` (B, I)."""

    def configure_optimizers(self) -> None:  # Lightning asks; there is nothing to optimise
        return None

    def tuning_state(self, train: sp.csr_matrix) -> Any:
        """What every candidate of an in-run tuning grid shares, computed once on this
        module's device (EASE: the Gram matrix); None: nothing is shared."""
        return None

    def fit_candidate(self, train: sp.csr_matrix, shared: Any) -> None:
        """Fit as a candidate of the tuning grid from ``shared`` (:meth:`tuning_state`'s):
        a candidate is only compared with the others, so it may be fit in a lower precision
        than the final fit (EASE: float32). By default, the final fit's own."""
        self.fit_closed_form(train)

    def release_weights(self) -> bool:
        """Give the fitted weights' memory up (loading a checkpoint restores them); True
        when that freed something worth a reload. Small models keep theirs."""
        return False

    def score_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x = history_rows(batch, self.num_items)
        return self.scores(x), x
