"""``run(cfg)``: train one model from a composed config; the entry (:mod:`lightrec.cli`)
calls this."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightrec import closed_form, progress, resume
from lightrec.callbacks import DivergenceGuard, EpochAverage, ReleaseHostMemory, SameRunFolder
from lightrec.config_check import check_config
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.errors import LightrecError
from lightrec.models.base import ClosedFormModule, RecommenderModule
from lightrec.progress import say
from lightrec.tb import RunLogger, write_summary
from lightrec.utils.io import write_json
from lightrec.utils.parallel import is_rank_zero
from lightrec.utils.path_utils import RunDir, get_directories, resuming

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> RecSysDataModule:
    """The ``data:`` block, instantiated (every argument is in the YAML)."""
    return instantiate(cfg.data, _convert_="all")


def build_model(cfg: DictConfig, num_items: int) -> RecommenderModule:
    """The ``model:`` block, instantiated with the data-dependent size filled in."""
    return instantiate(cfg.model, num_items=num_items, _convert_="all")


@dataclass
class TrainResult:
    """What :func:`fit` leaves: the model with the selected weights loaded, the data it was
    trained on, its run folder and the metrics written to ``metrics.json``."""

    model: RecommenderModule
    datamodule: RecSysDataModule
    run: RunDir
    metrics: dict[str, Any]
    monitored: float | None  # the monitored validation metric of the selected weights


def run(cfg: DictConfig) -> float | None:
    """Fit, select the best checkpoint on validation, write the run folder; return the
    monitored validation metric of the selected checkpoint (for Hydra sweeps)."""
    return fit(cfg).monitored


def fit(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> TrainResult:
    """:func:`run`, returning everything it made; ``extra_callbacks`` join the trainer's.

    With ``resume`` set, the run continues in its own folder: training from its last
    checkpoint (random states included), or, when training had finished, from the
    evaluation; the refit stage, which keeps no checkpoint of its own, starts again."""
    check_config(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    model = build_model(cfg, dm.num_items)
    run_dir = get_directories(cfg, "fit")  # bad input fails above, before anything is written
    continuing = resuming(cfg)
    if continuing:
        if is_rank_zero():
            resume.hold_run(run_dir)  # held until this process ends
        resume.check_same_setup(cfg, run_dir)
        resume.remove_partial_checkpoints(run_dir)
    elif is_rank_zero():
        if run_dir.config.exists():  # e.g. hydra.run.dir=<a run>: never overwrite a run
            state = "a finished" if run_dir.finished else "an unfinished"
            raise LightrecError(
                f"{run_dir.root} already holds {state} training run: train into a new "
                f"folder"
                + ("" if run_dir.finished else f", or continue it with resume={run_dir.root}")
            )
        OmegaConf.save(cfg, run_dir.config, resolve=True)
        write_json(run_dir.id_maps, dm.id_maps())
    logger = RunLogger(
        save_dir=str(run_dir.root), name="tensorboard", version="", default_hp_metric=False
    )
    monitor = cfg.checkpoint.monitor if dm.has_validation else None
    t0 = time.perf_counter()
    if is_rank_zero():
        say(progress.start_line(cfg, model, dm, run_dir, continuing))
    with resume.on_signals(run_dir):
        selection, in_memory = _select(
            cfg, dm, model, logger, run_dir, monitor, extra_callbacks or []
        )
        data = {**dm.meta["stats"], "file_md5": dm.data_md5}  # blend compares contents
        metrics: dict[str, Any] = {"model": cfg.model_name, **selection, "data": data}
        best = None if in_memory else run_dir.root / selection["best_checkpoint"]
        metrics.update(_evaluate(cfg, dm, model, best))
        if cfg.refit and dm.has_validation:
            with closed_form.weights_on_disk(model, run_dir.best_ckpt):
                metrics["refit"] = _refit(cfg, dm, metrics["best_epoch"], run_dir)
        elif cfg.refit:
            log.info("no refit: without a validation split the model already trained on every row")
    if is_rank_zero():
        write_summary(logger, cfg, metrics, model, dm.meta["item_ids"])
        write_json(run_dir.metrics, metrics)  # written last: marks the run as finished
        say(progress.finished_line(metrics, monitor, time.perf_counter() - t0, run_dir))
    log.info("run folder %s: %s", run_dir.root, {k: metrics.get(k) for k in ("val", "test")})
    monitored = None if monitor is None else metrics["val"][monitor.removeprefix("val/")]
    return TrainResult(model, dm, run_dir, metrics, monitored)


def _select(
    cfg: DictConfig,
    dm: RecSysDataModule,
    model: RecommenderModule,
    logger: TensorBoardLogger,
    run_dir: RunDir,
    monitor: str | None,
    extra_callbacks: list[pl.Callback],
) -> tuple[dict[str, Any], bool]:
    """The training stage: what it selected (``selection.json``), trained now or, for a run
    resumed after its training had finished, read back; and whether ``model`` already holds
    the selected weights (a closed-form fit of this process: every process of a job fits
    the same model, so none waits for another's checkpoint file)."""
    if run_dir.selection.is_file():
        return json.loads(run_dir.selection.read_text()), False
    in_memory = isinstance(model, ClosedFormModule)
    if isinstance(model, ClosedFormModule):
        selection = closed_form.fit_run(model, dm.train_csr, cfg.trainer.accelerator, run_dir)
    else:
        selection = _fit_sgd(cfg, dm, model, logger, run_dir, monitor, extra_callbacks)
    if is_rank_zero():
        write_json(run_dir.selection, selection)
    return selection, in_memory


def _evaluate(
    cfg: DictConfig, dm: RecSysDataModule, model: RecommenderModule, ckpt: Path | None
) -> dict[str, Any]:
    """The selected model's metrics (loaded from ``ckpt``, unless the model holds them
    already): validation, then test once (history = training and validation rows). They
    reach TensorBoard as final/* with HPARAMS, not as one more point on the curves."""
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
    evaluator = _trainer(cfg, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    out: dict[str, Any] = {}
    if dm.has_validation:
        out["val"] = _plain(evaluator.validate(model, datamodule=dm, verbose=False)[0], "val/")
    if dm.has_test:
        out["test"] = _plain(evaluator.test(model, datamodule=dm, verbose=False)[0], "test/")
    return out


def _refit(cfg: DictConfig, dm: RecSysDataModule, best_epoch: int, run_dir: RunDir) -> dict:
    """Train the selected configuration once more on every interaction the run may use
    (training and validation rows; test rows stay held out) for what validation chose: the
    best epoch count (the same users, so the same optimiser steps) for gradient models, its
    weights averaged over the last ``refit_average_epochs`` epochs when that is set, one fit
    for closed-form ones. Saves ``checkpoints/refit.ckpt``; returns its metrics.json part."""
    merged = dm.with_validation_in_training()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg, merged.num_items)
    logger = RunLogger(
        save_dir=str(run_dir.root), name="tensorboard", version="refit", default_hp_metric=False
    )
    shown, bar = progress.callbacks(cfg.progress, monitor=None, label="refit epoch")
    t0 = time.perf_counter()
    if isinstance(model, ClosedFormModule):
        closed_form.fit(model, merged.train_csr, cfg.trainer.accelerator, run_dir.refit_ckpt)
        trainer = _trainer(
            cfg, logger=logger, enable_checkpointing=False, enable_progress_bar=False
        )
    else:
        epochs = best_epoch + 1
        average = (
            [EpochAverage(cfg.refit_average_epochs, epochs)] if cfg.refit_average_epochs else []
        )
        trainer = _trainer(
            cfg,
            logger=logger,
            callbacks=[DivergenceGuard(), ReleaseHostMemory(), *average, *shown],
            enable_progress_bar=bar,
            default_root_dir=str(run_dir.root),
            max_epochs=epochs,
            min_epochs=epochs,
            limit_val_batches=0,
            enable_checkpointing=False,
            **_strategy_for(cfg, model),
        )
        trainer.fit(model, datamodule=merged)
        averaged = average[0].apply(model) if average else 0
        trainer.save_checkpoint(run_dir.refit_ckpt)
    refit: dict[str, Any] = {
        "checkpoint": run_dir.relative(run_dir.refit_ckpt),
        "epochs": int(trainer.current_epoch),
        "global_steps": int(trainer.global_step),
        "fit_time_s": round(time.perf_counter() - t0, 3),
        "train_rows": int(merged.train_csr.nnz),
    }
    if not isinstance(model, ClosedFormModule):
        refit["averaged_epochs"] = averaged
    if merged.has_test:  # computed once, like the selected model's
        refit["test"] = _plain(trainer.test(model, datamodule=merged, verbose=False)[0], "test/")
    log.info("refit on training + validation rows: %s", refit)
    return refit


def _strategy_for(cfg: DictConfig, model: RecommenderModule) -> dict[str, Any]:
    """``trainer.strategy``, adapted to a model that updates a part of itself at a time."""
    if cfg.trainer.strategy == "ddp" and not model.updates_every_parameter_each_step:
        return {"strategy": "ddp_find_unused_parameters_true"}
    return {}


def _trainer(cfg: DictConfig, **kw: Any) -> pl.Trainer:
    """``pl.Trainer`` from ``cfg.trainer``; keyword arguments add to or replace its keys.
    Checkpoints are written atomically (:class:`~lightrec.resume.AtomicCheckpointIO`)."""
    trainer_args: dict[str, Any] = OmegaConf.to_object(cfg.trainer)  # type: ignore[assignment]
    # the data module shards users itself (evaluation without padding duplicates)
    defaults = {"plugins": [resume.AtomicCheckpointIO()], "use_distributed_sampler": False}
    return pl.Trainer(**{**trainer_args, **defaults, **kw})


def _fit_sgd(
    cfg: DictConfig,
    dm: RecSysDataModule,
    model: RecommenderModule,
    logger: TensorBoardLogger,
    run_dir: RunDir,
    monitor: str | None,
    extra_callbacks: list[pl.Callback],
) -> dict[str, Any]:
    """Gradient training: best.ckpt by ``monitor`` (the last epoch without validation) and
    last.ckpt at the end of every epoch, validated or not; returns the selection."""
    last_cb = ModelCheckpoint(
        dirpath=run_dir.checkpoint_dir,
        filename=run_dir.last_ckpt.stem,
        save_top_k=1,
        save_on_train_epoch_end=True,  # after the epoch's validation, when there is one
        enable_version_counter=False,
    )
    # a run stopped before its first epoch ended starts again from its seed (no checkpoint)
    continuing = resuming(cfg)
    ckpt_path = run_dir.last_ckpt if continuing and run_dir.last_ckpt.is_file() else None
    if ckpt_path is not None:
        resume.check_loadable(ckpt_path, model)
    state = resume.ResumeState(resumes=int(continuing))
    shown, bar = progress.callbacks(cfg.progress, monitor, cfg.checkpoint.mode)
    callbacks = [
        last_cb,
        state,
        SameRunFolder(run_dir),
        DivergenceGuard(),
        ReleaseHostMemory(),
        *shown,
        *extra_callbacks,
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
    trainer = _trainer(
        cfg,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=bar,
        default_root_dir=str(run_dir.root),
        **_strategy_for(cfg, model),
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    if best_cb is None:
        shutil.copyfile(run_dir.last_ckpt, run_dir.best_ckpt)
    best_epoch = torch.load(run_dir.best_ckpt, map_location="cpu", weights_only=True)["epoch"]
    return {
        "best_checkpoint": run_dir.relative(run_dir.best_ckpt),
        "best_epoch": int(best_epoch),
        "epochs_trained": int(trainer.current_epoch),
        "global_steps": int(trainer.global_step),
        "fit_time_s": round(state.elapsed, 3),
        "resumed": state.resumes,
    }


def _plain(logged: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): round(float(v), 6) for k, v in logged.items()}
