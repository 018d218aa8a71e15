"""A closed-form model's knobs chosen on the run's own validation, inside the run.

A closed form fits in seconds, so instead of values pinned on one dataset (EASE's lambda
chosen on MovieLens-100K), the run fits each combination of its config's ``tune:`` grid on
the training rows, scores it on validation by ``checkpoint.monitor`` (the recipe's, so it
is the hidden set's rehearsal), and trains the best (the first of equals). The chosen
values go into the run's config.yaml and ``metrics.json`` (``tuned``), and into the log.
A knob the command line sets (a user's override, a search trial's value, a recipe's
``best.overrides``) is not tuned: it is taken as given.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lightrec.config.build import build_model
from lightrec.config.check import target_class
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.models.base import ClosedFormModule, RecommenderModule
from lightrec.training.stage import trainer
from lightrec.utils.console import say
from lightrec.utils.device import compute_device

log = logging.getLogger(__name__)


def given_keys() -> set[str]:
    """The config keys this job's own command line sets (none outside a Hydra job)."""
    if not HydraConfig.initialized():
        return set()
    return {str(o).split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}


def grid(cfg: DictConfig, given: set[str] | None = None) -> dict[str, list]:
    """The knobs to tune and their values: the config's ``tune:`` grid, less the knobs the
    command line sets (``given``; by default this job's own)."""
    wanted = OmegaConf.to_container(cfg.tune, resolve=True) if cfg.tune is not None else {}
    wanted = wanted or {}
    assert isinstance(wanted, dict)
    given = given_keys() if given is None else given
    return {str(k): list(v) for k, v in wanted.items() if "model." + str(k) not in given}


def as_tuned(cfg: DictConfig, given: set[str] | None = None) -> None:
    """``cfg.tune`` reduced to the knobs a run of it tunes: what its config.yaml records, so
    that two runs' settings compare (``best resume=true``)."""
    knobs = grid(cfg, given)
    cfg.tune = OmegaConf.create(knobs) if knobs and _tunes(cfg) else None


def _tunes(cfg: DictConfig) -> bool:
    return issubclass(target_class(cfg.model, "model.", RecommenderModule), ClosedFormModule)


def tune(cfg: DictConfig, dm: RecSysDataModule) -> dict[str, Any] | None:
    """Choose the grid's best values on validation and write them into ``cfg.model``;
    return what ``metrics.json`` records (None when there is nothing to tune)."""
    as_tuned(cfg)
    tuned = OmegaConf.to_container(cfg.tune) if cfg.tune is not None else {}
    assert isinstance(tuned, dict)
    knobs: dict[str, list] = {str(k): list(v) for k, v in tuned.items()}
    if not knobs or not dm.has_validation:
        cfg.tune = None  # nothing was tuned: the run's config says so
        return None
    monitor, mode = str(cfg.checkpoint.monitor), str(cfg.checkpoint.mode)
    evaluator = trainer(cfg, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    device = compute_device(cfg.trainer.accelerator)
    tried = []
    t0 = time.perf_counter()
    for combo in itertools.product(*knobs.values()):
        values = dict(zip(knobs, combo, strict=True))
        candidate = build_model(_with(cfg, values), dm.num_items).to(device)
        assert isinstance(candidate, ClosedFormModule)
        candidate.fit_closed_form(dm.train_csr)
        value = float(evaluator.validate(candidate, datamodule=dm, verbose=False)[0][monitor])
        tried.append({**values, monitor: round(value, 6)})
        del candidate
    sign = 1.0 if mode == "max" else -1.0
    best = max(range(len(tried)), key=lambda n: (sign * tried[n][monitor], -n))  # first of equals
    chosen = {k: tried[best][k] for k in knobs}
    for key, value in chosen.items():
        OmegaConf.update(cfg, f"model.{key}", value)
    shown = ", ".join(f"{k}={v}" for k, v in chosen.items())
    say(
        f"tuned {cfg.model_name} on validation: {shown} ({monitor} {tried[best][monitor]:.4f}, "
        f"the best of {len(tried)}, {time.perf_counter() - t0:.0f} s)"
    )
    return {"chosen": chosen, "monitor": monitor, "tried": tried}


def _with(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    changed = cfg.copy()
    for key, value in values.items():
        OmegaConf.update(changed, f"model.{key}", value)
    return changed
