"""``run(cfg)``: train one model from a composed config, the orchestration of a run: select on
validation, evaluate the selected model, refit it, write the run folder. The entry
(:mod:`lightrec.jobs`) calls this; the model's :class:`~lightrec.training.stage.Stage`
(gradient epochs or one closed-form fit, chosen once by :func:`stage_for`) does the training.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from lightrec.config.build import build_datamodule, build_model
from lightrec.config.check import check_config
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.errors import LightrecError
from lightrec.models.base import ClosedFormModule, RecommenderModule
from lightrec.training import progress, resume
from lightrec.training.closed_form import ClosedFormStage
from lightrec.training.gradient import GradientStage
from lightrec.training.stage import Job, Stage, trainer
from lightrec.training.tb import RunLogger, write_summary
from lightrec.training.tune import tune
from lightrec.utils.console import say
from lightrec.utils.io import write_json, write_text
from lightrec.utils.parallel import is_rank_zero
from lightrec.utils.path_utils import RunDir, get_directories, resuming

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`fit` leaves: the model with the selected weights loaded, the data it was
    trained on, its run folder and the metrics written to ``metrics.json``."""

    model: RecommenderModule
    datamodule: RecSysDataModule
    run: RunDir
    metrics: dict[str, Any]
    monitored: float | None  # the monitored validation metric of the selected weights


def stage_for(model: RecommenderModule) -> Stage:
    """How ``model`` trains: one closed-form fit, or gradient epochs (the one place the
    choice is made)."""
    return ClosedFormStage() if isinstance(model, ClosedFormModule) else GradientStage()


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
    tuned = tune(cfg, dm)  # a closed form's knobs, chosen on validation (cfg.model updated)
    model = build_model(cfg, dm.num_items)
    run_dir = get_directories(cfg, "fit")  # bad input fails above, before anything is written
    continuing = resuming(cfg)
    if continuing:
        if is_rank_zero():
            resume.hold_run(run_dir)  # held until this process ends
        resume.check_same_setup(cfg, run_dir)
        resume.check_same_data(run_dir, dm)
        resume.remove_partial_checkpoints(run_dir)
    elif is_rank_zero():
        if run_dir.config.exists():  # e.g. hydra.run.dir=<a run>: never overwrite a run
            state = "a finished" if run_dir.finished else "an unfinished"
            raise LightrecError(
                f"{run_dir.root} already holds {state} training run: train into a new "
                f"folder"
                + ("" if run_dir.finished else f", or continue it with resume={run_dir.root}")
            )
        # config.yaml marks the run as started: written whole, like every contract file
        write_text(run_dir.config, OmegaConf.to_yaml(cfg, resolve=True))
        write_json(run_dir.id_maps, {**dm.id_maps(), "data_file_md5": dm.data_md5})
    logger = RunLogger(
        save_dir=str(run_dir.root), name="tensorboard", version="", default_hp_metric=False
    )
    monitor = cfg.checkpoint.monitor if dm.has_validation else None
    t0 = time.perf_counter()
    if is_rank_zero():
        say(progress.start_line(cfg, model, dm, run_dir, continuing))
    job = Job(cfg, dm, run_dir, monitor, logger, extra_callbacks or [])
    stage = stage_for(model)
    with resume.on_signals(run_dir):
        selection, in_memory = _select(job, stage, model)
        data = {**dm.meta["stats"], "file_md5": dm.data_md5}  # blend compares contents
        metrics: dict[str, Any] = {"model": cfg.model_name, **selection, "data": data}
        if tuned is not None:
            metrics["tuned"] = tuned
        best = None if in_memory else run_dir.root / selection["best_checkpoint"]
        metrics.update(_evaluate(cfg, dm, model, best))
        if cfg.refit and dm.has_validation:
            with stage.released(model, run_dir.best_ckpt):
                metrics["refit"] = _refit(job, metrics["best_epoch"])
        elif cfg.refit:
            log.info("no refit: without a validation split the model already trained on every row")
    if is_rank_zero():
        write_summary(logger, cfg, metrics, model, dm.meta["item_ids"])
        write_json(run_dir.metrics, metrics)  # written last: marks the run as finished
        say(progress.finished_line(metrics, monitor, time.perf_counter() - t0, run_dir))
    log.info("run folder %s: %s", run_dir.root, {k: metrics.get(k) for k in ("val", "test")})
    monitored = None if monitor is None else metrics["val"][monitor.removeprefix("val/")]
    return TrainResult(model, dm, run_dir, metrics, monitored)


def _select(job: Job, stage: Stage, model: RecommenderModule) -> tuple[dict[str, Any], bool]:
    """The training stage: what it selected (``selection.json``), trained now or, for a run
    resumed after its training had finished, read back; and whether ``model`` already holds
    the selected weights (a closed-form fit of this process: every process of a job fits
    the same model, so none waits for another's checkpoint file)."""
    if job.run_dir.selection.is_file():
        return json.loads(job.run_dir.selection.read_text()), False
    selection = stage.select(job, model)
    if is_rank_zero():
        write_json(job.run_dir.selection, selection)
    return selection, stage.holds_selected


def _evaluate(
    cfg: DictConfig, dm: RecSysDataModule, model: RecommenderModule, ckpt: Path | None
) -> dict[str, Any]:
    """The selected model's metrics (loaded from ``ckpt``, unless the model holds them
    already): validation, then test once (history = training and validation rows). They
    reach TensorBoard as final/* with HPARAMS, not as one more point on the curves."""
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
    evaluator = trainer(cfg, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    out: dict[str, Any] = {}
    if dm.has_validation:
        out["val"] = _plain(evaluator.validate(model, datamodule=dm, verbose=False)[0], "val/")
    if dm.has_test:
        out["test"] = _plain(evaluator.test(model, datamodule=dm, verbose=False)[0], "test/")
    return out


def _refit(job: Job, best_epoch: int) -> dict[str, Any]:
    """Train the selected configuration once more on every interaction the run may use
    (training and validation rows; test rows stay held out) for what validation chose: the
    best epoch count for a gradient model, one fit for a closed-form one. Saves
    ``checkpoints/refit.ckpt``; returns its metrics.json part."""
    cfg, run_dir = job.cfg, job.run_dir
    merged = job.dm.with_validation_in_training()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg, merged.num_items)
    logger = RunLogger(
        save_dir=str(run_dir.root), name="tensorboard", version="refit", default_hp_metric=False
    )
    t0 = time.perf_counter()
    tester, extra = stage_for(model).refit(job, model, merged, logger, best_epoch + 1)
    refit: dict[str, Any] = {
        "checkpoint": run_dir.relative(run_dir.refit_ckpt),
        "epochs": int(tester.current_epoch),
        "global_steps": int(tester.global_step),
        "fit_time_s": round(time.perf_counter() - t0, 3),
        "train_rows": int(merged.train_csr.nnz),
        **extra,
    }
    if merged.has_test:  # computed once, like the selected model's
        refit["test"] = _plain(tester.test(model, datamodule=merged, verbose=False)[0], "test/")
    log.info("refit on training + validation rows: %s", refit)
    return refit


def _plain(logged: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): round(float(v), 6) for k, v in logged.items()}
