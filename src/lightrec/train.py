"""``run(cfg)``: train one model from a composed config; the entry scripts call this."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from lightrec.data.recsys_data import RecSysDataModule
from lightrec.utils.io import write_json
from lightrec.utils.memory import ReleaseHostMemory
from lightrec.utils.path_utils import BEST_CKPT, LAST_CKPT, get_directories

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> RecSysDataModule:
    return instantiate(
        cfg.data,
        use_cache=cfg.data_cache.use_cache,
        cache_dir=cfg.data_cache.cache_dir,
        _convert_="all",
    )


def build_model(cfg: DictConfig, dm: RecSysDataModule) -> pl.LightningModule:
    """Instantiate ``cfg.model`` with the data-dependent sizes filled in."""
    return instantiate(
        cfg.model, num_items=dm.num_items, exclude_seen=cfg.eval.exclude_seen, _convert_="all"
    )


def run(cfg: DictConfig) -> float | None:
    """Fit, select the best checkpoint on validation, write the run folder; return the
    monitored validation metric of the selected checkpoint (for Hydra sweeps)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    model = build_model(cfg, dm)
    paths = get_directories(cfg, "fit")  # bad input fails above, before anything is written
    OmegaConf.save(cfg, paths["config"], resolve=True)
    write_json(paths["id_maps"], dm.id_maps())

    logger = TensorBoardLogger(
        save_dir=str(paths["run_dir"]), name="tensorboard", version="", default_hp_metric=False
    )
    monitor = cfg.checkpoint.monitor if dm.has_validation else None
    t0 = time.perf_counter()
    if getattr(model, "closed_form", False):
        trainer, best = _fit_closed_form(cfg, dm, model, logger, paths)
    else:
        trainer, best = _fit_sgd(cfg, dm, model, logger, paths, monitor)
    fit_s = time.perf_counter() - t0

    # evaluate the selected checkpoint: validation, then test once (history = train + valid)
    state = torch.load(best, map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    metrics: dict[str, Any] = {
        "model": cfg.model_name,
        "best_checkpoint": str(best.relative_to(paths["run_dir"])),
        "best_epoch": int(state["epoch"]),
        "epochs_trained": int(trainer.current_epoch),
        "global_steps": int(trainer.global_step),
        "fit_time_s": round(fit_s, 3),
        "data": dm.meta["stats"],
    }
    if dm.has_validation:
        metrics["val"] = _plain(trainer.validate(model, datamodule=dm, verbose=False)[0], "val/")
    if dm.has_test:
        metrics["test"] = _plain(trainer.test(model, datamodule=dm, verbose=False)[0], "test/")
    write_json(paths["metrics"], metrics)  # written last: marks the run as finished
    log.info("run folder %s: %s", paths["run_dir"], {k: metrics.get(k) for k in ("val", "test")})
    if monitor is None:
        return None
    return metrics["val"][monitor.removeprefix("val/")]


def _trainer(cfg: DictConfig, **kw: Any) -> pl.Trainer:
    return pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), **kw)


def _fit_sgd(cfg, dm, model, logger, paths, monitor) -> tuple[pl.Trainer, Path]:
    """Gradient training; the best checkpoint by ``monitor`` (the last without validation)."""
    if monitor is None:
        log.warning("no validation split: training runs for trainer.max_epochs, keeping last")
    ckpt_cb = ModelCheckpoint(
        dirpath=paths["checkpoint_dir"],
        filename=Path(BEST_CKPT).stem,
        monitor=monitor,
        mode=cfg.checkpoint.mode,
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[pl.Callback] = [ckpt_cb, ReleaseHostMemory()]
    if monitor is not None:
        callbacks.append(
            EarlyStopping(
                monitor=monitor, mode=cfg.checkpoint.mode, patience=cfg.early_stopping.patience
            )  # fmt: skip
        )
    trainer = _trainer(cfg, callbacks=callbacks, logger=logger,
                       default_root_dir=str(paths["run_dir"]))  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return trainer, Path(ckpt_cb.best_model_path or paths["checkpoint_dir"] / LAST_CKPT)


def _fit_closed_form(cfg, dm, model, logger, paths) -> tuple[pl.Trainer, Path]:
    """One closed-form fit on the training matrix, on the GPU when the trainer would use one."""
    use_gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    model.to("cuda" if use_gpu else "cpu")
    model.fit_closed_form(dm.train_csr)
    trainer = _trainer(cfg, logger=logger, default_root_dir=str(paths["run_dir"]))
    trainer.strategy.connect(model)
    trainer.strategy.model_to_device()
    best = paths["checkpoint_dir"] / BEST_CKPT
    trainer.save_checkpoint(best, weights_only=True)  # no optimiser: nothing else to keep
    shutil.copyfile(best, paths["checkpoint_dir"] / LAST_CKPT)
    return trainer, best


def _plain(logged: dict[str, float], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): round(float(v), 6) for k, v in logged.items()}
