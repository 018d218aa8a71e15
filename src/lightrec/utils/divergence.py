"""Stop a run whose loss became NaN or infinite, naming the step and the usual cause.

The check costs no host-device synchronisation per step: each step updates a flag on the
loss's device (the first bad step, or -1), and the host reads it only every
``trainer.log_every_n_steps`` steps (when Lightning synchronises to log anyway) and at the
end of each epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from lightrec.errors import LightrecError


def step_loss(outputs: Any) -> torch.Tensor | None:
    """The loss a training step returned (a tensor, or a mapping with ``"loss"``), detached;
    None when the step returned none (manual optimisation may return nothing)."""
    loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
    return loss.detach() if isinstance(loss, torch.Tensor) else None


class DivergenceGuard(pl.Callback):
    def __init__(self) -> None:
        self.first_bad: torch.Tensor | None = None  # first non-finite step, -1 while none
        self.kind: torch.Tensor | None = None  # 1: NaN, 2: infinite

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = step_loss(outputs)
        if loss is None:
            return
        if self.first_bad is None or self.first_bad.device != loss.device:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
            self.kind = torch.zeros((), dtype=torch.long, device=loss.device)
        assert self.kind is not None
        new = (~torch.isfinite(loss)) & (self.first_bad < 0)
        # the step as a fill value: a kernel argument, no host-to-device copy
        self.first_bad = torch.where(
            new, torch.full_like(self.first_bad, trainer.global_step), self.first_bad
        )
        self.kind = torch.where(new, torch.where(torch.isnan(loss), 1, 2), self.kind)
        if (trainer.global_step + 1) % max(getattr(trainer, "log_every_n_steps", 1), 1) == 0:
            self.check(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(pl_module)

    def check(self, pl_module: pl.LightningModule) -> None:
        if self.first_bad is None or self.kind is None:
            return
        step = int(self.first_bad)
        if step < 0:
            return
        what = "NaN" if int(self.kind) == 1 else "infinite"
        lr = pl_module.hparams.get("lr")
        cause = f" (model.lr={lr})" if lr is not None else ""
        raise LightrecError(
            f"training diverged: the loss became {what} at step {step}; the usual cause is a "
            f"learning rate that is too high{cause}: lower it and train again"
        )
