"""The search itself: ``python -m lightrec train CONFIG -m hparams_search=<file>``.

A thin driver over Optuna's own API (ask and tell); docs/ARCHITECTURE.md says why it is not
Hydra's Optuna sweeper. The space and its settings are the ``search:`` block, which a file of
``configs/hparams_search/`` fills in; each trial is one training run composed with Hydra's
compose API and trained by :func:`lightrec.training.fit.fit`, in its own folder
(:mod:`lightrec.search.records`).

``resume=true`` (or ``resume=<search folder>``) continues a search: the finished trials are
kept, the count goes on to ``search.n_trials``, and a trial whose worker died on this
machine is marked failed, its values tried again by the next trial. Trial ``n`` draws with
the sampler seeded by ``search.seed + n`` (:class:`lightrec.search.study.SeedPerTrial`).
"""

from __future__ import annotations

import dataclasses
import signal
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import Trial, TrialState

from lightrec.config.check import check_config
from lightrec.errors import LightrecError
from lightrec.jobs import Command, compose_job, drop_keys, preflight, run_job, split_overrides
from lightrec.search import records, workers
from lightrec.search.study import (
    COUNTED,
    ReportToTrial,
    open_study,
    overrides,
    place,
    space,
    suggest,
)
from lightrec.search.workers import SearchInterrupted
from lightrec.training import fit
from lightrec.training.resume import RunInterrupted, resume_command
from lightrec.utils.console import say
from lightrec.utils.path_utils import quote_override

FAILURES_IN_A_ROW = 3  # a worker gives up after this many failed trials in a row
SEARCH_KEYS = {"resume", "search.workers", "search.confirm_seeds"}  # not passed to workers


@dataclass
class Search:
    """One worker's view of a search: what it runs, where, and against which study."""

    config: str
    fixed: list[str]  # the command's overrides for every trial (no resume, no sweep)
    cfg: DictConfig  # the first trial's composed config (the search: block included)
    folder: Path
    storage: str
    distributions: dict[str, BaseDistribution]
    study: optuna.Study

    @property
    def settings(self) -> DictConfig:
        return self.cfg.search


def run(cmd: Command) -> int:
    """Run (or continue) the search a command line asks for; return the exit code."""
    fixed = drop_keys(cmd.overrides, {"resume"})
    job = dataclasses.replace(cmd, overrides=fixed, multirun=False)
    for sweep in split_overrides(fixed)[1]:
        raise LightrecError(
            f"{sweep.input_line}: a search draws its values from search.params; give one "
            "value here (or add the key to search.params)"
        )
    cfg = preflight(job, "train")
    resume = compose_job(cmd.config, cmd.overrides).resume
    distributions = _checked_space(job, cfg)
    name = records.search_name(cmd.overrides)
    folder, recorded = records.folder(cmd.config, name, cfg, resume)
    folder = folder.resolve()  # workers, and a resume from another folder, find it
    own = folder / records.JOURNAL_FILE
    if recorded and not cfg.search.storage and Path(recorded).expanduser().resolve() != own:
        # search.yaml is read as untrusted: a shared folder must not point this machine's
        # search at another database; the user names it, or the folder's own journal is used
        raise LightrecError(
            f"{folder / records.SEARCH_FILE} names the storage {recorded!r}, not the folder's "
            f"own journal: to continue that study, give search.storage={recorded} yourself"
        )
    storage = str(cfg.search.storage or own)
    study = open_study(cfg, storage, distributions, resume)
    search = Search(cmd.config, fixed, cfg, folder, storage, distributions, study)
    records.write_asked(
        folder,
        {
            "config": cmd.config,
            "hparams_search": name,
            "study_name": str(cfg.search.study_name),
            "storage": storage,
            "overrides": fixed,
        },
    )
    child = workers.is_worker()
    try:
        workers.fail_dead_trials(study)
        if search.settings.workers > 1 and not child:
            _launch(search)
        else:
            _work(search)
        if not child:
            _finish(search)
    except SearchInterrupted as e:
        argv = [sys.argv[0], "train", cmd.config, "-m", *cmd.overrides]
        print(
            f"interrupted ({e.signal_name}): the search is unfinished; continue it with:\n  "
            f"{resume_command(folder, argv)}",
            file=sys.stderr,
        )
        return e.exit_code
    return 0


def _checked_space(cmd: Command, cfg: DictConfig) -> dict[str, BaseDistribution]:
    """The space, with every choice and both ends of every range checked as a trial would
    be (one sentence naming the value before any trial runs)."""
    if cfg.search.params is None or not len(cfg.search.params):
        raise LightrecError(
            "search.params is empty: a search needs a file of configs/hparams_search/ "
            "(-m hparams_search=<file>)"
        )
    if cfg.data.split_strategy == "none":
        raise LightrecError("a search selects on validation: data.split_strategy=none has none")
    if cfg.trainer.strategy == "ddp" or cfg.trainer.num_nodes > 1:
        raise LightrecError("a search trains each trial in one process: drop trainer.strategy=ddp")
    distributions = space(OmegaConf.to_container(cfg.search.params))  # type: ignore[arg-type]
    values = {
        key: list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]  # type: ignore[attr-defined]
        for key, d in distributions.items()
    }
    firsts = {key: vs[0] for key, vs in values.items()}
    for key, vs in values.items():
        for v in vs:
            drawn = {**firsts, key: v}
            try:
                check_config(compose_job(cmd.config, [*cmd.overrides, *overrides(drawn)]))
            except LightrecError as e:
                raise LightrecError(f"search.params.{key} value {v!r}: {e}") from None
            except Exception as e:  # noqa: BLE001 - Hydra's own refusal of the value
                why = str(e).splitlines()[0]
                raise LightrecError(f"search.params.{key} value {v!r}: {why}") from None
    return distributions


def _launch(search: Search) -> None:
    """``search.workers`` processes of this command on this search's study."""
    argv = [
        sys.executable,
        "-m",
        "lightrec",
        "train",
        search.config,
        "-m",
        *drop_keys(search.fixed, SEARCH_KEYS),
        f"resume={quote_override(str(search.folder))}",
        "search.workers=1",
        "search.confirm_seeds=0",
    ]
    workers.launch(argv, int(search.settings.workers), search.storage)


def _work(search: Search) -> None:
    """Run trials until the study holds ``search.n_trials`` finished, pruned or running
    ones. A trial asked when every place was taken (another worker asked first) is told
    failed at once, marked ``surplus``, and ends this worker."""
    study = search.study
    me = workers.me()
    study.set_user_attr(f"worker {me['host']} {me['pid']}", me)  # joined, whatever it gets
    failures = 0
    previous = signal.signal(signal.SIGTERM, workers.stops_on_sigterm())
    n_trials = search.settings.n_trials
    try:
        while len(study.get_trials(deepcopy=False, states=COUNTED)) < n_trials:
            trial = study.ask()  # its number, and so its seed, come from the storage
            trial.set_user_attr("worker", me)
            if place(study, trial) >= n_trials:
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=TrialState.FAIL)
                break
            failures = _trial(search, trial, failures)
    except KeyboardInterrupt:
        raise SearchInterrupted("SIGINT", 128 + signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _trial(search: Search, trial: Trial, failures: int) -> int:
    """Run one trial and tell the study how it ended; return the failures in a row."""
    t0 = time.perf_counter()
    try:
        drawn = suggest(trial, search.distributions)
        value, pruned_at = _train_trial(search, trial, drawn)
    except LightrecError as e:
        trial.set_user_attr("error", str(e))
        search.study.tell(trial, state=TrialState.FAIL)
        say(f"search: trial {trial.number} failed: {e}")
        if failures + 1 >= FAILURES_IN_A_ROW:
            raise LightrecError(f"{failures + 1} trials in a row failed; the last: {e}") from None
        return failures + 1
    except RunInterrupted as e:
        search.study.tell(trial, state=TrialState.FAIL)
        raise SearchInterrupted(e.signal_name, e.exit_code) from None
    except KeyboardInterrupt:
        search.study.tell(trial, state=TrialState.FAIL)
        raise SearchInterrupted("SIGINT", 128 + signal.SIGINT) from None
    except BaseException:
        search.study.tell(trial, state=TrialState.FAIL)
        raise
    seconds = time.perf_counter() - t0
    trial.set_user_attr("time_s", round(seconds, 1))
    if pruned_at is not None:
        search.study.tell(trial, state=TrialState.PRUNED)
        say(f"search: trial {trial.number} pruned at epoch {pruned_at} ({seconds:.0f} s)")
    else:
        search.study.tell(trial, value)
        best = search.study.best_trial
        monitor = search.cfg.checkpoint.monitor
        say(
            f"search: trial {trial.number} {monitor} {value:.4f} ({seconds:.0f} s); best "
            f"{best.value:.4f} (trial {best.number})"
        )
    return 0


def _train_trial(
    search: Search, trial: Trial, drawn: Mapping[str, Any]
) -> tuple[float, int | None]:
    """Train the trial's seeds; the mean of their monitored values, or the epoch at which
    the pruner stopped the first seed."""
    folder = search.folder / f"trial_{trial.number:03d}"
    trial.set_user_attr("run_dir", str(folder))
    k = search.settings.seeds_per_trial
    seeds = [None] if k == 1 else [search.cfg.seed + i for i in range(k)]
    reporter = ReportToTrial(trial, str(search.cfg.checkpoint.monitor))
    values = []
    for i, seed in enumerate(seeds):
        run_dir = folder if seed is None else folder / f"seed_{seed}"
        seed_override = [] if seed is None else [f"seed={seed}"]
        value = _train(
            search, [*overrides(drawn), *seed_override], run_dir, [reporter] if i == 0 else []
        )
        if reporter.pruned_at is not None:
            return float("nan"), reporter.pruned_at
        values.append(value)
    if k > 1:
        trial.set_user_attr("seed_values", values)
    return statistics.fmean(values), None


def _train(search: Search, drawn: list[str], run_dir: Path, callbacks: list[pl.Callback]) -> float:
    """One training run of the search's config with the ``drawn`` overrides, in
    ``run_dir``; its monitored validation value."""
    # every value was composed and checked before the search (_checked_space); fit checks
    # the trial's whole config again, a refusal being the trial's LightrecError
    hydra_args = ["hydra.job.name=train", f"hydra.run.dir={quote_override(str(run_dir))}"]
    monitored = run_job(
        search.config,
        [*search.fixed, *drawn, *hydra_args],
        lambda cfg: fit.fit(cfg, extra_callbacks=callbacks).monitored,
    )
    if monitored is None:
        raise LightrecError(f"{run_dir} has no validation value to search on")
    return float(monitored)


def _finish(search: Search) -> None:
    """``best.yaml``: the best trial, the command that trains it, and its value measured
    again on ``search.confirm_seeds`` fresh seeds."""
    study = search.study
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise LightrecError(
            f"no trial of the search in {search.folder} finished: see the trials' lines above"
        )
    best = study.best_trial
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    params = overrides(best.params)
    confirmed = _confirm(search, best.number, params)
    record = {
        "study": str(search.settings.study_name),
        "storage": search.storage,
        "monitor": str(search.cfg.checkpoint.monitor),
        "trials": {k: v for k, v in counts.items() if v},
        "best_trial": best.number,
        "best_value": round(float(best.value), 6),  # type: ignore[arg-type]
        "best_params": dict(best.params),
        "best_run": best.user_attrs.get("run_dir"),
        "train_command": records.train_command(search.config, search.fixed, params),
        **({"confirmed": confirmed} if confirmed else {}),
    }
    path = records.write_best(search.folder, record)
    line = f"search: best trial {best.number}, {record['monitor']} {record['best_value']:.4f}"
    if confirmed:
        line += f"; on {len(confirmed['seeds'])} fresh seeds {confirmed['mean']:.4f}"
    say(f"{line}; {path}")


def _confirm(search: Search, number: int, params: list[str]) -> dict[str, Any] | None:
    """The best trial's values trained on fresh seeds (after every seed its trials used);
    kept from ``best.yaml`` when the same trial was confirmed on the same seeds before."""
    n = int(search.settings.confirm_seeds)
    if n == 0:
        return None
    first = search.cfg.seed + search.settings.seeds_per_trial
    seeds = list(range(first, first + n))
    before = records.read(search.folder / records.BEST_FILE) or {}
    done = before.get("confirmed")
    if before.get("best_trial") == number and isinstance(done, dict) and done["seeds"] == seeds:
        return done
    folder = search.folder / f"confirm_trial_{number}"
    values = [_train(search, [*params, f"seed={s}"], folder / f"seed_{s}", []) for s in seeds]
    return {
        "seeds": seeds,
        "values": [round(v, 6) for v in values],
        "mean": round(statistics.fmean(values), 6),
    }
