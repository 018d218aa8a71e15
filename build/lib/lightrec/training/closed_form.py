"""The training stage of a closed-form model (EASE, Popularity): one fit on the training
matrix instead of epochs, on this process's device, saved as a checkpoint in Lightning's
format (weights and plain hyper-parameters) by the first process.

The fit is deterministic: every process of a data-parallel job fits the same model (and
evaluates its own share of users), and a resumed run simply fits again.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightrec.data.recsys_data import RecSysDataModule
from lightrec.models.base import ClosedFormModule, RecommenderModule
from lightrec.training.resume import AtomicCheckpointIO
from lightrec.training.stage import Job, Stage, trainer
from lightrec.utils.device import compute_device
from lightrec.utils.parallel import is_rank_zero
from lightrec.utils.path_utils import RunDir


def fit(model: ClosedFormModule, train: sp.csr_matrix, accelerator: str, ckpt: Path) -> float:
    """Fit ``model`` on ``train`` on the device ``trainer.accelerator`` picks, save it to
    ``ckpt`` (first process only); return the seconds it took."""
    t0 = time.perf_counter()
    model.to(compute_device(accelerator))
    model.fit_closed_form(train)
    if is_rank_zero():
        checkpoint = {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "hparams_name": "kwargs",
            "hyper_parameters": dict(model.hparams),
        }
        AtomicCheckpointIO().save_checkpoint(checkpoint, ckpt)
    return time.perf_counter() - t0


def fit_run(
    model: ClosedFormModule, train: sp.csr_matrix, accelerator: str, run: RunDir
) -> dict[str, Any]:
    """A run's training stage: the fit is both its best and its last checkpoint; returns the
    selection (what ``selection.json`` and ``metrics.json`` record)."""
    seconds = fit(model, train, accelerator, run.best_ckpt)
    if is_rank_zero():
        shutil.copyfile(run.best_ckpt, run.last_ckpt)
    return {
        "best_checkpoint": run.relative(run.best_ckpt),
        "best_epoch": 0,
        "epochs_trained": 0,
        "global_steps": 0,
        "fit_time_s": round(seconds, 3),
        "resumed": 0,
    }


class ClosedFormStage(Stage):
    """One deterministic fit on the training matrix: the fit is both the best and the last
    checkpoint, and the model holds its weights after it."""

    holds_selected = True

    def select(self, job: Job, model: RecommenderModule) -> dict[str, Any]:
        assert isinstance(model, ClosedFormModule)
        return fit_run(model, job.dm.train_csr, job.cfg.trainer.accelerator, job.run_dir)

    def refit(
        self,
        job: Job,
        model: RecommenderModule,
        merged: RecSysDataModule,
        logger: TensorBoardLogger,
        epochs: int,
    ) -> tuple[pl.Trainer, dict[str, Any]]:
        """One fit on the merged rows (``epochs`` means nothing to a closed form)."""
        assert isinstance(model, ClosedFormModule)
        fit(model, merged.train_csr, job.cfg.trainer.accelerator, job.run_dir.refit_ckpt)
        tester = trainer(
            job.cfg, logger=logger, enable_checkpointing=False, enable_progress_bar=False
        )
        return tester, {}

    @contextmanager
    def released(self, model: RecommenderModule, ckpt: Path) -> Iterator[None]:
        with weights_on_disk(model, ckpt):
            yield


@contextmanager
def weights_on_disk(model: RecommenderModule, ckpt: Path) -> Iterator[None]:
    """Within: a fitted closed-form ``model`` holds no weights (they are in ``ckpt``), so
    that the refit's fit of a second model of the same size has the memory to itself (EASE
    on 23k items: one 6.6 GB fit at a time, not 2.2 GB more); after: reloaded from
    ``ckpt``. Other models are left as they are."""
    if not isinstance(model, ClosedFormModule) or not model.release_weights():
        yield
        return
    try:
        yield
    finally:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
