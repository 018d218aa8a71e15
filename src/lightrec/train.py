"""``run(cfg)``: train one model from a composed config; the entry scripts call this."""

from __future__ import annotations

import json
import logging
import os
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
from pytorch_lightning.utilities import rank_zero_only

from lightrec import progress
from lightrec.config_check import check_config
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.errors import LightrecError
from lightrec.models.base import ClosedFormModule, RecommenderModule
from lightrec.progress import say
from lightrec.resume import AtomicCheckpointIO, ResumeState, on_signals, remove_partial_checkpoints
from lightrec.tb import RunLogger, write_summary
from lightrec.utils.averaging import EpochAverage
from lightrec.utils.divergence import DivergenceGuard
from lightrec.utils.io import write_json
from lightrec.utils.memory import ReleaseHostMemory
from lightrec.utils.path_utils import RunDir, get_directories

log = logging.getLogger(__name__)


def is_rank_zero() -> bool:
    """The process that writes a run's files (the only one without data parallelism)."""
    return getattr(rank_zero_only, "rank", 0) == 0


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
    resuming = cfg.resume not in (False, None)
    if resuming:
        _check_same_setup(cfg, run_dir)
        remove_partial_checkpoints(run_dir)
    else:
        if is_rank_zero():
            OmegaConf.save(cfg, run_dir.config, resolve=True)
            write_json(run_dir.id_maps, dm.id_maps())

    logger = RunLogger(
        save_dir=str(run_dir.root), name="tensorboard", version="", default_hp_metric=False
    )
    monitor = cfg.checkpoint.monitor if dm.has_validation else None
    t0 = time.perf_counter()
    if is_rank_zero():
        data = "MovieLens-100K (built-in)" if cfg.data.path is None else dm.data_path
        say(
            f"{'continuing' if resuming else 'training'} {cfg.model_name} ({type(model).__name__})"
            f" on {data}: {dm.num_users:,} users x {dm.num_items:,} items, "
            f"{dm.split.describe()}; {describe_device(cfg)}; run folder {run_dir.root}"
        )
    with on_signals(run_dir):
        if run_dir.selection.is_file():  # resumed after training had finished
            selection = json.loads(run_dir.selection.read_text())
        elif isinstance(model, ClosedFormModule):
            selection = _fit_closed_form_run(cfg, dm, model, run_dir)
        else:
            selection = _fit_sgd(
                cfg, dm, model, logger, run_dir, monitor, extra_callbacks or [], resuming
            )
        if is_rank_zero():
            write_json(run_dir.selection, selection)

        # evaluate the selected checkpoint: validation, then test once (history = train + valid)
        state = torch.load(
            run_dir.root / selection["best_checkpoint"], map_location="cpu", weights_only=True
        )
        model.load_state_dict(state["state_dict"])
        metrics: dict[str, Any] = {"model": cfg.model_name, **selection, "data": dm.meta["stats"]}
        # the selected model's numbers reach TensorBoard as final/* (with HPARAMS), not as
        # one more point on the training curves
        evaluator = _trainer(
            cfg, logger=False, enable_checkpointing=False, enable_progress_bar=False
        )
        if dm.has_validation:
            val = evaluator.validate(model, datamodule=dm, verbose=False)
            metrics["val"] = _plain(val[0], "val/")
        if dm.has_test:
            metrics["test"] = _plain(
                evaluator.test(model, datamodule=dm, verbose=False)[0], "test/"
            )
        if cfg.refit and dm.has_validation:
            metrics["refit"] = _refit(cfg, dm, metrics["best_epoch"], run_dir)
        elif cfg.refit:
            log.info("no refit: without a validation split the model already trained on every row")
    if is_rank_zero():
        write_summary(logger, cfg, metrics, model, dm.meta["item_ids"])
    if is_rank_zero():
        write_json(run_dir.metrics, metrics)  # written last: marks the run as finished
    log.info("run folder %s: %s", run_dir.root, {k: metrics.get(k) for k in ("val", "test")})
    if is_rank_zero():
        say(finished_line(metrics, monitor, time.perf_counter() - t0, run_dir))
    monitored = None if monitor is None else metrics["val"][monitor.removeprefix("val/")]
    return TrainResult(model, dm, run_dir, metrics, monitored)


# what must match for a run to be continued: everything that shapes its computation
SAME_ON_RESUME = (
    "seed",
    "refit",
    "model",
    "data",
    "eval",
    "checkpoint",
    "early_stopping",
    "trainer",
)


def _check_same_setup(cfg: DictConfig, run_dir: RunDir) -> None:
    """A resumed run must be the same computation: refuse another setup, naming the key."""
    saved = OmegaConf.to_container(OmegaConf.load(run_dir.config), resolve=True)
    now = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(saved, dict) and isinstance(now, dict)
    for key in SAME_ON_RESUME:
        for name, (a, b) in _diff(saved.get(key), now.get(key), key).items():
            raise LightrecError(
                f"resume: {name} is {b!r} here but {a!r} in {run_dir.root}; a run continues "
                "with the settings it started with (give the same overrides, or none)"
            )


def _diff(a: Any, b: Any, prefix: str) -> dict[str, tuple[Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for k in sorted(set(a) | set(b), key=str):
            out.update(_diff(a.get(k), b.get(k), f"{prefix}.{k}"))
        return out
    return {} if a == b else {prefix: (a, b)}


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
        _fit_closed_form(cfg, merged, model, run_dir.refit_ckpt)
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


def describe_device(cfg: DictConfig) -> str:
    """Where a run computes, in words: the device, how many, the precision."""
    t = cfg.trainer
    gpu = torch.cuda.is_available() and t.accelerator in ("auto", "gpu", "cuda")
    where = f"GPU {torch.cuda.get_device_name()}" if gpu else "CPU"
    where += f" ({torch.get_num_threads()} threads)" if not gpu else ""
    if str(t.devices) not in ("1", "auto") or t.num_nodes > 1:
        where += f" x {t.devices} devices x {t.num_nodes} machines ({t.strategy})"
    return f"{where}, precision {t.precision}"


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


class SameRunFolder(pl.Callback):
    """Every process of a data-parallel job must use the first one's run folder (the others
    read its checkpoints); one sentence when they do not."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            first = trainer.strategy.broadcast(str(self.run_dir.root), src=0)
            if first != str(self.run_dir.root):
                raise LightrecError(
                    f"the processes of this data-parallel job use different run folders "
                    f"({first} and {self.run_dir.root}): give them all hydra.run.dir=<one folder>"
                )


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
    defaults = {"plugins": [AtomicCheckpointIO()], "use_distributed_sampler": False}
    return pl.Trainer(**{**trainer_args, **defaults, **kw})


def _fit_sgd(
    cfg: DictConfig,
    dm: RecSysDataModule,
    model: RecommenderModule,
    logger: TensorBoardLogger,
    run_dir: RunDir,
    monitor: str | None,
    extra_callbacks: list[pl.Callback],
    resuming: bool,
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
    ckpt_path = run_dir.last_ckpt if resuming and run_dir.last_ckpt.is_file() else None
    state = ResumeState(resumes=int(resuming))
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


def _fit_closed_form_run(
    cfg: DictConfig, dm: RecSysDataModule, model: ClosedFormModule, run_dir: RunDir
) -> dict[str, Any]:
    """The closed-form fit of a run (deterministic: a resumed run simply fits again)."""
    t0 = time.perf_counter()
    _fit_closed_form(cfg, dm, model, run_dir.best_ckpt)
    if is_rank_zero():
        shutil.copyfile(run_dir.best_ckpt, run_dir.last_ckpt)
    return {
        "best_checkpoint": run_dir.relative(run_dir.best_ckpt),
        "best_epoch": 0,
        "epochs_trained": 0,
        "global_steps": 0,
        "fit_time_s": round(time.perf_counter() - t0, 3),
        "resumed": 0,
    }


def _fit_closed_form(
    cfg: DictConfig, dm: RecSysDataModule, model: ClosedFormModule, ckpt: Path
) -> None:
    """One closed-form fit on the training matrix, on this process's GPU when the trainer
    would use one (every process of a data-parallel job fits the same model), saved to
    ``ckpt`` by the first process: weights only, in Lightning's checkpoint format."""
    use_gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_gpu else "cpu"
    model.to(device)
    model.fit_closed_form(dm.train_csr)
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


def _plain(logged: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): round(float(v), 6) for k, v in logged.items()}
