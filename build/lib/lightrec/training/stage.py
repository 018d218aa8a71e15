"""What one training stage works on, and the contract of the two ways a model trains.

A :class:`Job` is everything a stage reads (the config, the data, the run folder, the
monitored metric, the logger and any extra callbacks); a :class:`Stage` is how a model
trains: gradient epochs (:mod:`lightrec.training.gradient`) or one closed-form fit
(:mod:`lightrec.training.closed_form`). :func:`lightrec.training.fit.stage_for` chooses one,
once, from the model's class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import TensorBoardLogger

from lightrec.data.recsys_data import RecSysDataModule
from lightrec.models.base import RecommenderModule
from lightrec.training import resume
from lightrec.utils.path_utils import RunDir


@dataclass
class Job:
    """What a training stage reads: one run's config, data and folder."""

    cfg: DictConfig
    dm: RecSysDataModule
    run_dir: RunDir
    monitor: str | None  # the monitored validation metric; None without a validation split
    logger: TensorBoardLogger
    extra_callbacks: list[pl.Callback] = field(default_factory=list)


class Stage(ABC):
    """How a model trains: its selection stage, its refit, and what it holds meanwhile."""

    #: after :meth:`select`, the model holds the selected weights (nothing to reload)
    holds_selected: bool = False

    @abstractmethod
    def select(self, job: Job, model: RecommenderModule) -> dict[str, Any]:
        """Train on the training rows, keep ``best.ckpt`` and ``last.ckpt``; return the
        selection (what ``selection.json`` records)."""

    @abstractmethod
    def refit(
        self,
        job: Job,
        model: RecommenderModule,
        merged: RecSysDataModule,
        logger: TensorBoardLogger,
        epochs: int,
    ) -> tuple[pl.Trainer, dict[str, Any]]:
        """Train ``model`` on ``merged`` (training and validation rows) as selected (for
        ``epochs`` epochs), save ``refit.ckpt``; return a trainer that can test it and what
        ``metrics.json`` records beyond the common keys."""

    @contextmanager
    def released(self, model: RecommenderModule, ckpt: Path) -> Iterator[None]:
        """Within: ``model`` may give up its weights (kept in ``ckpt``) to make room."""
        yield


def trainer(cfg: DictConfig, **kw: Any) -> pl.Trainer:
    """``pl.Trainer`` from ``cfg.trainer``; keyword arguments add to or replace its keys.
    Checkpoints are written atomically (:class:`~lightrec.training.resume.AtomicCheckpointIO`)."""
    trainer_args: dict[str, Any] = OmegaConf.to_object(cfg.trainer)  # type: ignore[assignment]
    # the data module shards users itself (evaluation without padding duplicates)
    defaults = {"plugins": [resume.AtomicCheckpointIO()], "use_distributed_sampler": False}
    return pl.Trainer(**{**trainer_args, **defaults, **kw})
