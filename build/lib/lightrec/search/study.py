"""The Optuna adapter: the search space in Hydra's sweep grammar, a trial's draw, its report to
the pruner, and the study in its storage (a journal file, or a database).

A trial's draw is seeded by its number, which the storage hands out atomically
(:class:`SeedPerTrial`): two workers never draw with one seed, whichever asks first, and a
trial's values do not depend on the process that drew them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import optuna
import pytorch_lightning as pl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.samplers import BaseSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState

from lightrec.errors import LightrecError

IDENTITY_KEY = "lightrec_search"  # the study's user attribute naming what it searches
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def space(params: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The search space of ``search.params``, written in Hydra's sweep grammar:
    ``choice(a, b)``, ``range(lo, hi[, step])``, ``interval(lo, hi)`` (floats),
    ``int(interval(lo, hi))`` and ``tag(log, interval(lo, hi))``.

    >>> d = space({"model.lr": "tag(log, interval(0.001, 0.1))", "data.max_len": "range(9, 11)"})
    >>> d["model.lr"].log, d["data.max_len"].choices
    (True, (9, 10))
    """
    parser = OverridesParser.create()
    out: dict[str, BaseDistribution] = {}
    for key, expr in params.items():
        where = f"search.params.{key}={expr}"
        try:
            (override,) = parser.parse_overrides([f"{key}={expr}"])
        except HydraException as e:
            raise LightrecError(f"{where} cannot be parsed ({str(e).splitlines()[0]})") from None
        value = override.value()
        if isinstance(value, ChoiceSweep | RangeSweep):
            choices = list(override.sweep_iterator())
            plain = [c for c in choices if c is None or isinstance(c, bool | int | float | str)]
            if len(plain) < len(choices):
                raise LightrecError(
                    f'{where}: a choice is a number or text (write a list as text: "[600,200]")'
                )
            out[key] = CategoricalDistribution(plain)
        elif isinstance(value, IntervalSweep):
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                out[key] = IntDistribution(value.start, value.end, log=log)
            else:
                out[key] = FloatDistribution(
                    float(value.start or 0), float(value.end or 0), log=log
                )
        else:
            raise LightrecError(
                f"{where} is one value, not a range: give it as an override (key=value), or "
                "search it with choice(...) or interval(...)"
            )
    return out


def override(key: str, value: Any) -> str:
    """A drawn value as the override that sets it (``model.hidden_dims=[600,200]``)."""
    text = {True: "true", False: "false", None: "null"}.get(value, value)
    return f"{key}={text}"


def overrides(drawn: Mapping[str, Any]) -> list[str]:
    """A trial's drawn values as the overrides that set them."""
    return [override(k, v) for k, v in drawn.items()]


def suggest(trial: Trial, distributions: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """Draw every value of a trial through Optuna's public ``suggest_*``."""
    drawn: dict[str, Any] = {}
    for key, d in distributions.items():
        if isinstance(d, CategoricalDistribution):
            drawn[key] = trial.suggest_categorical(key, d.choices)
        elif isinstance(d, IntDistribution):
            drawn[key] = trial.suggest_int(key, d.low, d.high, log=d.log)
        elif isinstance(d, FloatDistribution):
            drawn[key] = trial.suggest_float(key, d.low, d.high, log=d.log)
    return drawn


class ReportToTrial(pl.Callback):
    """Feeds the monitored validation metric to the trial after each validation (the
    epoch is the step), and stops training when the pruner calls the trial hopeless."""

    def __init__(self, trial: Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.trial.report(float(value), trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True


class SeedPerTrial(BaseSampler):
    """TPE seeded by ``seed + trial.number`` for each trial: the storage hands numbers out
    atomically, so no two trials share a seed, and the study's sampler is set once, before
    any ``ask()``. A trial's draw then depends only on its number and the study's history."""

    def __init__(self, seed: int, n_startup_trials: int) -> None:
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self._tpe: dict[int, TPESampler] = {}

    def _for(self, trial: FrozenTrial) -> TPESampler:
        if trial.number not in self._tpe:
            self._tpe[trial.number] = TPESampler(
                seed=self.seed + trial.number, n_startup_trials=self.n_startup_trials
            )
        return self._tpe[trial.number]

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, dist: BaseDistribution
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, dist)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Any,
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)
        self._tpe.pop(trial.number, None)

    def reseed_rng(self) -> None:  # the seeds are the trials' numbers: nothing to reseed
        return


def pruner(settings: DictConfig) -> optuna.pruners.BasePruner:
    """``search.pruner``: the median rule after the warm-up, or none."""
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.prune_startup_trials,
            n_warmup_steps=settings.prune_warmup_epochs,
        )
    return optuna.pruners.NopPruner()


def open_storage(storage: str) -> optuna.storages.BaseStorage:
    """A database URL (``sqlite:///...``, ``postgresql://...``) or a journal file's path as
    Optuna's storage; one sentence when it cannot be opened."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    try:
        if "://" in storage:
            return RDBStorage(storage)
        path = Path(storage).expanduser()
        if path.exists() and not path.is_file():
            raise LightrecError(f"search.storage={storage} is a folder, not a journal file")
        if not path.parent.is_dir():
            raise LightrecError(f"search.storage={storage}: the folder {path.parent} is missing")
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return JournalStorage(backend)
    except LightrecError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad URL, a missing driver, a garbled journal
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LightrecError(f"search.storage={storage} cannot be opened ({why})") from None


def identity(cfg: DictConfig, distributions: Mapping[str, BaseDistribution]) -> dict:
    """What makes two studies the same search: the model, the data, the direction and
    the space."""
    return {
        "model_name": str(cfg.model_name),
        "data": None if cfg.data.path is None else str(cfg.data.path),
        "monitor": str(cfg.checkpoint.monitor),
        "space": {k: json.loads(distribution_to_json(d)) for k, d in distributions.items()},
    }


def open_study(
    cfg: DictConfig, storage: str, distributions: dict[str, BaseDistribution], resume: Any
) -> optuna.Study:
    """Create the study, or with ``resume`` load it, with its sampler and pruner set; a study
    made by another search (a different model, data file, metric or space) is refused in
    one sentence."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = str(cfg.search.study_name)
    store = open_storage(storage)
    direction: Literal["maximize", "minimize"] = (
        "maximize" if cfg.checkpoint.mode == "max" else "minimize"
    )
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(store)}
    if name in existing and resume in (False, None) and existing[name].n_trials:
        raise LightrecError(
            f"the study {name!r} in {storage} already has {existing[name].n_trials} trials: "
            "continue it (or join it from another machine) with resume=true"
        )
    study = optuna.create_study(
        storage=store,
        study_name=name,
        direction=direction,
        load_if_exists=True,
        sampler=SeedPerTrial(cfg.search.seed, cfg.search.n_startup_trials),
        pruner=pruner(cfg.search),
    )
    wanted = identity(cfg, distributions)
    found = study.user_attrs.get(IDENTITY_KEY)
    if found is None:
        study.set_user_attr(IDENTITY_KEY, wanted)
    elif found != wanted or study.direction.name.lower() != direction:
        diff = [k for k in wanted if found.get(k) != wanted[k]] or ["direction"]
        raise LightrecError(
            f"the study {name!r} in {storage} belongs to another search (its {diff[0]} "
            "differs): name a new study with search.study_name=... or another search.storage"
        )
    return study


def place(study: Study, trial: Trial) -> int:
    """How many trials asked before ``trial`` count toward ``search.n_trials`` (finished,
    pruned or running): the storage numbers trials atomically, so two workers never both
    take the last place."""
    before = study.get_trials(deepcopy=False, states=COUNTED)
    return sum(t.number < trial.number for t in before)
