"""Popularity: every item scored by its number of training users. The floor any model
must clear."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from lightrec.models.base import ClosedFormModule
from lightrec.params import PositiveInt


class Popularity(ClosedFormModule):
    """Args:
    num_items: filled in from the data module.
    eval_ks: cut-offs of the validation/test metrics.
    exclude_seen: rank only unseen items in validation/test (``eval.exclude_seen``).
    """

    counts: torch.Tensor

    def __init__(
        self, num_items: PositiveInt, eval_ks: list[PositiveInt], exclude_seen: bool
    ) -> None:
        super().__init__(num_items, list(eval_ks), exclude_seen)
        self.save_hyperparameters()
        self.register_buffer("counts", torch.zeros(num_items))

    def fit_closed_form(self, train: sp.csr_matrix) -> None:
        counts = np.bincount(train.indices, minlength=self.num_items).astype(np.float32)
        self.counts.copy_(torch.from_numpy(counts))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(x.shape[0], -1).clone()
