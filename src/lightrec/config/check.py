"""Every configuration value checked before any work, in one place, with the key named.

- Blocks with a ``_target_`` (``model:``, ``data:``) are checked against their class's
  constructor: unknown and missing keys, and each value against its annotation (types,
  ``Literal`` choices, the ranges of :mod:`lightrec.params`). The class owns its rules.
- The other blocks are checked against the small schemas below; ``trainer:`` keys must be
  ``pytorch_lightning.Trainer`` arguments.
- Then what needs two keys: ``trainer.min_epochs`` <= ``max_epochs``; ``checkpoint.monitor``
  names a validation metric at a cut-off ``model.eval_ks`` computes; ``resume`` with a
  single run.

:func:`check_config` raises :class:`~lightrec.errors.LightrecError` with one sentence;
train, predict and the entry scripts' pre-flight (:func:`lightrec.cli.preflight`) call it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from hydra.utils import get_class
from lightning_fabric.connector import _PRECISION_INPUT
from omegaconf import DictConfig, OmegaConf

from lightrec.config.values import check_value
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.errors import LightrecError
from lightrec.metrics import METRICS
from lightrec.models.base import ClosedFormModule, RecommenderModule
from lightrec.params import FolderName, MaxTime, NonNegativeInt, PositiveInt

MISSING = "???"
NESTED = (
    "config key {key}: only model._target_ and data._target_ name classes; nothing nested "
    "is ever built (remove it)"
)


@dataclass
class Top:
    model_name: FolderName
    seed: NonNegativeInt
    refit: bool
    refit_average_epochs: NonNegativeInt
    progress: Literal["auto", "bar", "lines", "none"]
    resume: bool | str
    run_dir: str | None
    ckpt_path: str | None
    tune: dict[str, list] | None


@dataclass
class Paths:
    log_root: str
    predict_log_root: str
    blends: str
    reranks: str


@dataclass
class DataCache:
    use_cache: bool
    cache_dir: str


@dataclass
class Eval:
    exclude_seen: bool
    ks: list[PositiveInt]


@dataclass
class Checkpoint:
    monitor: str
    mode: Literal["max", "min"]


@dataclass
class EarlyStopping:
    patience: PositiveInt


@dataclass
class Predict:
    top_k: PositiveInt
    batch_size: PositiveInt
    use_refit: bool


@dataclass
class Trainer:
    """The ranges of the trainer keys the shipped configs set (any other Trainer argument
    may be given, and is checked by Lightning)."""

    max_epochs: PositiveInt
    max_time: MaxTime | None
    min_epochs: NonNegativeInt
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"]
    devices: int | str | list[int]
    num_nodes: PositiveInt
    strategy: str
    precision: _PRECISION_INPUT  # Lightning's own list of precision values
    log_every_n_steps: PositiveInt
    check_val_every_n_epoch: PositiveInt | None
    num_sanity_val_steps: int
    enable_progress_bar: bool
    enable_model_summary: bool
    deterministic: bool | Literal["warn"]


@dataclass
class Best:
    """``python -m lightrec best``: the recipe's members and how they are combined."""

    members: list[FolderName]
    combine: Literal["blend", "rerank"]
    available_only: bool
    max_users: PositiveInt
    overrides: dict[str, list[str]]
    bags: dict[str, PositiveInt] | None
    budget: MaxTime | None


@dataclass
class Search:
    """A hyper-parameter search (:mod:`lightrec.search.driver`); a file of configs/hparams_search/
    fills it in."""

    study_name: FolderName
    storage: str | None
    n_trials: PositiveInt
    workers: PositiveInt
    seed: NonNegativeInt
    n_startup_trials: NonNegativeInt
    seeds_per_trial: PositiveInt
    confirm_seeds: NonNegativeInt
    pruner: Literal["none", "median"]
    prune_startup_trials: NonNegativeInt
    prune_warmup_epochs: NonNegativeInt
    params: dict[str, str]


SCHEMAS: dict[str, type] = {
    "best": Best,
    "search": Search,
    "paths": Paths,
    "data_cache": DataCache,
    "eval": Eval,
    "checkpoint": Checkpoint,
    "early_stopping": EarlyStopping,
    "predict": Predict,
}


TOP_LEVEL = {f.name for f in fields(Top)} | set(SCHEMAS) | {"model", "data", "trainer"}


def check_config(cfg: DictConfig) -> None:
    """Raise LightrecError naming the first key whose value is unknown, missing, of the
    wrong type, out of range or inconsistent with another."""
    unknown = sorted(set(cfg.keys()) - TOP_LEVEL, key=str)
    if unknown:
        raise LightrecError(
            f"unknown config key {unknown[0]!r} (the top-level keys are: "
            f"{', '.join(sorted(TOP_LEVEL))})"
        )
    classes = {
        "model": target_class(cfg.model, "model.", RecommenderModule),  # before any resolving:
        "data": target_class(cfg.data, "data.", RecSysDataModule),  # nothing else is imported
    }
    plain: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    _check_schema(Top, {k: plain[k] for k in (f.name for f in fields(Top))}, "")
    for name, schema in SCHEMAS.items():
        _check_schema(schema, plain[name], f"{name}.")
    _check_trainer(plain["trainer"])
    for name, cls in classes.items():
        _check_arguments(plain[name], f"{name}.", cls)
    _check_tune(plain["tune"], classes["model"])
    _check_consistency(plain)


def _check_tune(grid: Mapping[str, Any], cls: type) -> None:
    """``tune:``: only a closed-form model's own arguments, each value one it accepts."""
    if not grid:
        return
    if not issubclass(cls, ClosedFormModule):
        raise LightrecError(
            f"tune is for closed-form models ({cls.__name__} trains by gradient: search it "
            "with -m hparams_search=..., or set tune=null)"
        )
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    params = inspect.signature(cls).parameters
    for key, values in grid.items():
        if key not in params or key in ("num_items", "eval_ks", "exclude_seen"):
            raise LightrecError(f"tune.{key}: {cls.__name__} has no knob {key!r} to tune")
        if not isinstance(values, list) or not values:
            raise LightrecError(f"tune.{key} must be a list of values to try")
        for value in values:
            if key in hints:
                check_value(value, hints[key], f"tune.{key}")


def _check_schema(schema: type, values: Mapping[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(schema, include_extras=True)
    names = [f.name for f in fields(schema)]
    for key in values:
        if key not in hints:
            raise LightrecError(f"unknown config key {prefix}{key} (it takes: {', '.join(names)})")
    for key in names:
        if key not in values:
            raise LightrecError(f"config key {prefix}{key} is missing")
        check_value(values[key], hints[key], f"{prefix}{key}")


def _check_trainer(values: Mapping[str, Any]) -> None:
    import pytorch_lightning as pl

    accepted = inspect.signature(pl.Trainer).parameters
    hints = typing.get_type_hints(Trainer, include_extras=True)
    for key, value in values.items():
        if key not in accepted:
            raise LightrecError(
                f"unknown config key trainer.{key} (not a pytorch_lightning.Trainer argument)"
            )
        if key in hints:
            check_value(value, hints[key], f"trainer.{key}")


def is_closed_form(cfg: DictConfig) -> bool:
    """Whether the config's model is fit in closed form (tuned in the run, trained first
    under a budget), read from its ``_target_`` without building or importing anything
    else."""
    return issubclass(target_class(cfg.model, "model.", RecommenderModule), ClosedFormModule)


def target_class(block: Mapping[str, Any], prefix: str, base: type) -> type:
    """The class a ``_target_`` block names, which must be a subclass of ``base``: nothing
    else is ever built from a config (or from a run folder's config.yaml)."""
    target = block.get("_target_")
    if not isinstance(target, str):
        raise LightrecError(f"config key {prefix}_target_ must name a class")
    if not target.startswith("lightrec."):  # refused before anything is imported
        raise LightrecError(f"{prefix}_target_={target!r} is not a lightrec {base.__name__}")
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001 - any import failure is a bad name for the user
        raise LightrecError(f"{prefix}_target_={target!r} is not an importable class") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise LightrecError(f"{prefix}_target_={target!r} is not a lightrec {base.__name__}")
    return cls


def check_run_config(cfg: Mapping[str, Any], where: str) -> None:
    """A run folder's config.yaml, someone else's perhaps: its ``model`` and ``data`` blocks
    must name lightrec's classes and nothing nested; one sentence naming ``where`` and the
    key otherwise. Nothing is imported but lightrec's own modules."""
    try:
        for part, base in (("model", RecommenderModule), ("data", RecSysDataModule)):
            block = cfg.get(part)
            if not isinstance(block, Mapping):
                raise LightrecError(f"config.yaml has no {part}: block")
            target_class(block, f"{part}.", base)
            plain = (
                OmegaConf.to_container(block, resolve=False)
                if isinstance(block, DictConfig)
                else dict(block)
            )
            assert isinstance(plain, dict)
            plain.pop("_target_", None)
            if found := nested_target(plain, f"{part}."):
                raise LightrecError(NESTED.format(key=found))
    except LightrecError as e:
        raise LightrecError(f"run folder {where}: {e}") from None


def _check_arguments(block: Mapping[str, Any], prefix: str, cls: type) -> None:
    """A ``_target_`` block's keys and values against its class's signature and annotations."""
    params = inspect.signature(cls).parameters
    hints = typing.get_type_hints(cls.__init__, include_extras=True)  # type: ignore[misc]
    args = {k: v for k, v in block.items() if k != "_target_"}
    if where := nested_target(args, prefix):
        raise LightrecError(NESTED.format(key=where))
    for key in args:
        if key not in params:
            raise LightrecError(
                f"unknown config key {prefix}{key} ({cls.__name__} takes: {', '.join(params)})"
            )
    for key, p in params.items():
        if key not in args:
            if p.default is inspect.Parameter.empty:
                raise LightrecError(
                    f"config key {prefix}{key} is missing ({cls.__name__} needs it)"
                )
            continue
        if args[key] == MISSING:  # filled in from the data (num_items)
            continue
        if key in hints:
            check_value(args[key], hints[key], f"{prefix}{key}")


def _check_consistency(c: dict[str, Any]) -> None:
    t = c["trainer"]
    if t.get("min_epochs", 0) > t.get("max_epochs", t.get("min_epochs", 0)):
        raise LightrecError(
            f"trainer.min_epochs={t['min_epochs']} is more than trainer.max_epochs="
            f"{t['max_epochs']}: lower trainer.min_epochs too"
        )
    every = t.get("check_val_every_n_epoch") or 1
    if c["data"]["split_strategy"] != "none" and t["max_epochs"] < every:
        raise LightrecError(
            f"trainer.max_epochs={t['max_epochs']} is less than trainer.check_val_every_n_epoch="
            f"{every}: no epoch would be validated, so none could be selected; raise "
            "trainer.max_epochs or lower the cadence"
        )
    monitor = c["checkpoint"]["monitor"]
    ks = c["model"].get("eval_ks", [])
    name, _, k = monitor.removeprefix("val/").partition("@")
    valid = [f"val/{m}@{kk}" for m in (*METRICS, "coverage") for kk in ks]
    if not monitor.startswith("val/") or name not in METRICS or not k.isdigit() or int(k) not in ks:
        raise LightrecError(
            f"checkpoint.monitor={monitor!r} is not a validation metric this "
            f"model computes (model.eval_ks={ks}); one of: {', '.join(valid[:6])}"
        )
    d = c["data"]
    model_cls: type[RecommenderModule] = get_class(c["model"]["_target_"])
    if d["view"] != model_cls.data_view:
        raise LightrecError(
            f"data.view={d['view']!r} does not fit the model: {model_cls.__name__} reads the "
            f"{model_cls.data_view!r} view (its class declares it); drop the data.view override"
        )
    if c["resume"] not in (False, None) and (c["run_dir"] or c["ckpt_path"]):
        raise LightrecError(
            "resume continues a training run; run_dir and ckpt_path are for predict"
        )


def nested_target(value: Any, prefix: str) -> str | None:
    """The key of the first ``_target_`` at any depth of a plain value, or None.

    >>> nested_target({"columns": {"user": {"_target_": "os.system"}}}, "data.")
    'data.columns.user._target_'
    >>> nested_target({"columns": [{"a": 1}]}, "data.") is None
    True
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "_target_":
                return f"{prefix}_target_"
            if found := nested_target(item, f"{prefix}{key}."):
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if found := nested_target(item, f"{prefix}{i}."):
                return found
    return None
