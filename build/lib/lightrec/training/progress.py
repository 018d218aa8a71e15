"""What a user sees while a run works: a progress bar in a terminal, one line per epoch
elsewhere, and one line when a stage starts and ends.

``progress`` (a top-level config key) picks: ``auto`` (a bar when standard output is a
terminal, lines otherwise: pipes, files, CI), ``bar``, ``lines`` or ``none``. The bar is
Lightning's TQDM bar (epoch, step, time left, the training loss and the monitored
validation metric); a line reads ``epoch 4/300  loss 512.3  val/ndcg@10 0.0712 (best
0.0730)  1.9 s``, printed once per epoch with no carriage-return redraws.

:func:`start_line` and :func:`finished_line` are the lines that open and close a training;
:mod:`lightrec.utils.console` has the settings and the single lines.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar

from lightrec.training.callbacks import step_loss
from lightrec.utils import device
from lightrec.utils.console import mode
from lightrec.utils.path_utils import RunDir


def callbacks(
    progress: str, monitor: str | None, better: str = "max", label: str = "epoch"
) -> tuple[list[pl.Callback], bool]:
    """The progress callbacks for a training, and whether Lightning's bar is enabled."""
    m = mode(progress)
    if m == "bar":
        return [Bar(monitor)], True
    if m == "lines":
        return [EpochLines(monitor, better, label)], False
    return [], False


class Bar(TQDMProgressBar):
    """Lightning's TQDM bar showing the training loss and the monitored metric (not the
    logger's version number)."""

    def __init__(self, monitor: str | None) -> None:
        super().__init__(leave=True)
        self.monitor = monitor

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        shown: dict[str, Any] = {}
        for key, label in (("train/loss", "loss"), (self.monitor, self.monitor)):
            value = trainer.callback_metrics.get(key) if key else None
            if key and label and isinstance(value, torch.Tensor):
                shown[label] = f"{float(value):.4g}"
        return shown


class EpochLines(pl.Callback):
    """One plain line per epoch: loss (mean over the epoch's steps), monitored metric, time."""

    def __init__(self, monitor: str | None, better: str = "max", label: str = "epoch") -> None:
        self.monitor = monitor
        self.label = label
        self.pick = max if better == "max" else min
        self.best: float | None = None
        self._sum: torch.Tensor | None = None
        self._steps = 0
        self._validated = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._sum, self._steps, self._validated = None, 0, False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated = True

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = step_loss(outputs)
        if loss is not None:  # summed on the device: no host sync per step
            self._sum = loss if self._sum is None else self._sum + loss
            self._steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        parts = [f"{self.label} {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        if self._sum is not None:
            parts.append(f"loss {float(self._sum) / self._steps:.4g}")
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if isinstance(value, torch.Tensor) and self._validated:  # this epoch was validated
            v = float(value)
            self.best = v if self.best is None else self.pick(self.best, v)
            parts.append(f"{self.monitor} {v:.4f} (best {self.best:.4f})")
        parts.append(f"{time.perf_counter() - self._t0:.1f} s")
        print("  ".join(parts), flush=True)


def start_line(cfg: Any, model: pl.LightningModule, dm: Any, run: RunDir, resuming: bool) -> str:
    """The line that opens a training: model, data, size, split, device, run folder."""
    data = "MovieLens-100K (built-in)" if cfg.data.path is None else dm.data_path
    return (
        f"{'continuing' if resuming else 'training'} {cfg.model_name} ({type(model).__name__})"
        f" on {data}: {dm.num_users:,} users x {dm.num_items:,} items, "
        f"{dm.split.describe()}; {device.describe(cfg.trainer)}; run folder {run.root}"
    )


def finished_line(metrics: dict[str, Any], monitor: str | None, seconds: float, run: RunDir) -> str:
    """The line that ends a training: best epoch, the monitored metric, the refit, where."""
    parts = [f"finished in {seconds:.0f} s"]
    if metrics["epochs_trained"]:
        parts.append(f"best epoch {metrics['best_epoch'] + 1} of {metrics['epochs_trained']}")
    name = monitor.removeprefix("val/") if monitor else "ndcg@10"
    if monitor is not None:
        parts.append(f"{monitor} {metrics['val'][name]:.4f}")
    if "test" in metrics and name in metrics["test"]:
        parts.append(f"test/{name} {metrics['test'][name]:.4f}")
    if "refit" in metrics:
        epochs = metrics["refit"]["epochs"]
        parts.append(
            "refit on training + validation rows" + (f" ({epochs} epochs)" if epochs else "")
        )
    return "; ".join(parts) + f"; run folder {run.root}"
