"""Average a model's weights over the last epochs of a training without validation.

The refit stage trains for the epoch count validation chose, but with no validation left it
cannot pick its best epoch: it ends wherever the epoch-to-epoch swing puts it. Averaging the
weights of its last ``n`` epochs (a uniform average of the epoch-end weights, as in
stochastic weight averaging) smooths that swing. Integer buffers are left as they are.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class EpochAverage(pl.Callback):
    """Keep the running mean of the floating-point weights at the end of each of the last
    ``epochs`` epochs of ``max_epochs``; :meth:`apply` writes the mean into the module."""

    def __init__(self, epochs: int, max_epochs: int) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        self.first = max(max_epochs - epochs, 0)  # 0-based index of the first averaged epoch
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch < self.first:
            return
        self.count += 1
        with torch.no_grad():
            for name, value in pl_module.state_dict().items():
                if not value.is_floating_point():
                    continue
                if name not in self.mean:
                    self.mean[name] = value.detach().clone()
                else:  # running mean, on the weights' device
                    self.mean[name] += (value.detach() - self.mean[name]) / self.count

    def apply(self, module: torch.nn.Module) -> int:
        """Write the averaged weights into ``module``; returns how many epochs were averaged."""
        if self.count:
            state = module.state_dict()
            with torch.no_grad():
                for name, value in self.mean.items():
                    state[name].copy_(value)
        return self.count
