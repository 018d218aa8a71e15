"""The training stage of a gradient model (MultiVAE, RecVAE, SASRec, BERT4Rec): epochs until
early stopping, ``best.ckpt`` by the monitored validation metric and ``last.ckpt`` at the end
of every epoch (what a resume continues from); its refit trains the selected epoch count."""

from __future__ import annotations

import logging
import shutil
from typing import Any

import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightrec.data.recsys_data import RecSysDataModule
from lightrec.models.base import RecommenderModule
from lightrec.training import progress, resume
from lightrec.training.callbacks import (
    DivergenceGuard,
    EpochAverage,
    ReleaseHostMemory,
    SameRunFolder,
)
from lightrec.training.stage import Job, Stage, trainer
from lightrec.utils.path_utils import resuming

log = logging.getLogger(__name__)


def strategy_for(job: Job, model: RecommenderModule) -> dict[str, Any]:
    """``trainer.strategy``, adapted to a model that updates a part of itself at a time."""
    if job.cfg.trainer.strategy == "ddp" and not model.updates_every_parameter_each_step:
        return {"strategy": "ddp_find_unused_parameters_true"}
    return {}


class GradientStage(Stage):
    """Epochs of gradient steps (Lightning's loop)."""

    def select(self, job: Job, model: RecommenderModule) -> dict[str, Any]:
        """Gradient training: best.ckpt by ``job.monitor`` (the last epoch without
        validation) and last.ckpt at the end of every epoch, validated or not."""
        cfg, run_dir, monitor = job.cfg, job.run_dir, job.monitor
        last_cb = ModelCheckpoint(
            dirpath=run_dir.checkpoint_dir,
            filename=run_dir.last_ckpt.stem,
            save_top_k=1,
            save_on_train_epoch_end=True,  # after the epoch's validation, when there is one
            enable_version_counter=False,
        )
        # a run stopped before its first epoch ended starts again from its seed
        continuing = resuming(cfg)
        ckpt_path = run_dir.last_ckpt if continuing and run_dir.last_ckpt.is_file() else None
        if ckpt_path is not None:
            resume.check_loadable(ckpt_path, model)
        state = resume.ResumeState(resumes=int(continuing))
        shown, bar = progress.callbacks(cfg.progress, monitor, cfg.checkpoint.mode)
        callbacks = [
            resume.StopOnSignal(),
            state,
            SameRunFolder(run_dir),
            DivergenceGuard(),
            ReleaseHostMemory(),
            *shown,
            *job.extra_callbacks,
        ]
        best_cb = None
        if monitor is None:
            log.warning("no validation split: training runs for trainer.max_epochs, keeping last")
        else:
            best_cb = ModelCheckpoint(
                dirpath=run_dir.checkpoint_dir,
                filename=run_dir.best_ckpt.stem,
                monitor=monitor,
                mode=cfg.checkpoint.mode,
                save_top_k=1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
            stop = EarlyStopping(
                monitor=monitor, mode=cfg.checkpoint.mode, patience=cfg.early_stopping.patience
            )
            callbacks += [best_cb, stop]
        # last.ckpt, the point a resume starts from, is written after everything else of
        # the epoch (best.ckpt, early stopping's count): a kill the moment it is in place
        # leaves nothing of that epoch unsaved (issue 40.15: written first, a kill between
        # it and best.ckpt resumed to a stale best checkpoint)
        callbacks.append(last_cb)
        fitter = trainer(
            cfg,
            callbacks=callbacks,
            logger=job.logger,
            enable_progress_bar=bar,
            default_root_dir=str(run_dir.root),
            **strategy_for(job, model),
        )
        fitter.fit(model, datamodule=job.dm, ckpt_path=ckpt_path, weights_only=True)
        if best_cb is None:
            shutil.copyfile(run_dir.last_ckpt, run_dir.best_ckpt)
        best = torch.load(run_dir.best_ckpt, map_location="cpu", weights_only=True)["epoch"]
        return {
            "best_checkpoint": run_dir.relative(run_dir.best_ckpt),
            "best_epoch": int(best),
            "epochs_trained": int(fitter.current_epoch),
            "global_steps": int(fitter.global_step),
            "fit_time_s": round(state.elapsed, 3),
            "resumed": state.resumes,
        }

    def refit(
        self,
        job: Job,
        model: RecommenderModule,
        merged: RecSysDataModule,
        logger: TensorBoardLogger,
        epochs: int,
    ) -> tuple[Any, dict[str, Any]]:
        """``epochs`` epochs on the merged rows (the same users, so the same optimiser
        steps), the weights averaged over the last ``refit_average_epochs`` when set."""
        cfg = job.cfg
        shown, bar = progress.callbacks(cfg.progress, monitor=None, label="refit epoch")
        average = (
            [EpochAverage(cfg.refit_average_epochs, epochs)] if cfg.refit_average_epochs else []
        )
        fitter = trainer(
            cfg,
            logger=logger,
            callbacks=[
                resume.StopOnSignal(),
                DivergenceGuard(),
                ReleaseHostMemory(),
                *average,
                *shown,
            ],
            enable_progress_bar=bar,
            default_root_dir=str(job.run_dir.root),
            max_epochs=epochs,
            min_epochs=epochs,
            limit_val_batches=0,
            enable_checkpointing=False,
            **strategy_for(job, model),
        )
        fitter.fit(model, datamodule=merged)
        averaged = average[0].apply(model) if average else 0
        fitter.save_checkpoint(job.run_dir.refit_ckpt)
        return fitter, {"averaged_epochs": averaged}
