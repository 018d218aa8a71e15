"""Building lightrec's own objects from a config, and nothing else.

A config, and a run folder's ``config.yaml`` above all (someone else may have written it), is
untrusted input. Only two blocks name a class, ``model._target_`` (a
:class:`~lightrec.models.base.RecommenderModule`) and ``data._target_`` (a
:class:`~lightrec.data.recsys_data.RecSysDataModule`); each class is checked before it is
imported (:func:`lightrec.config.check.target_class`), and its arguments are plain values
passed to it as they are. Hydra's recursive ``instantiate`` is never used: a ``_target_``
nested at any depth would name code to run, so it is refused in one sentence.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightrec.config.check import NESTED, nested_target, target_class
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.errors import LightrecError
from lightrec.models.base import RecommenderModule


def build_datamodule(cfg: DictConfig) -> RecSysDataModule:
    """The ``data:`` block as its :class:`RecSysDataModule` (every argument in the YAML)."""
    cls = target_class(cfg.data, "data.", RecSysDataModule)
    return cls(**arguments(cfg.data, "data."))


def build_model(cfg: DictConfig, num_items: int) -> RecommenderModule:
    """The ``model:`` block as its model class, with the data-dependent size filled in."""
    cls = target_class(cfg.model, "model.", RecommenderModule)
    return cls(**{**arguments(cfg.model, "model."), "num_items": num_items})


def arguments(block: DictConfig, prefix: str) -> dict[str, Any]:
    """A ``_target_`` block's arguments as plain values; a ``_target_`` inside them is
    refused, naming its key."""
    args = OmegaConf.to_container(block, resolve=True)
    assert isinstance(args, dict)
    args.pop("_target_", None)
    if where := nested_target(args, prefix):
        raise LightrecError(NESTED.format(key=where))
    return {str(k): v for k, v in args.items()}
