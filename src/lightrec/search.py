"""Hyper-parameter searches: ``python -m lightrec train CONFIG -m hparams_search=<file>``.

A thin driver over Optuna's own API (ask and tell); docs/ARCHITECTURE.md says why it is not
Hydra's Optuna sweeper. The search space and its settings are the ``search:`` block, which a
file of ``configs/hparams_search/`` fills in; each trial is one training run composed with
Hydra's compose API and trained by :func:`lightrec.train.fit`, in its own folder.

A search's folder, ``<paths.log_root>/<model_name>/<date>/<time>-search``, holds:

- ``search.yaml``: what was asked (the config, the search file, the study and its storage);
- ``study.journal``: the study (Optuna's journal file), unless ``search.storage`` names a
  shared one (a journal file on a shared disk, or a database URL);
- ``trial_<n>``: trial ``n``'s training run, or one ``seed_<s>`` run per seed when
  ``search.seeds_per_trial`` > 1 (its values are in its ``config.yaml`` and in the study);
- ``best.yaml``: the best trial, its values, the command that trains it, and its value
  measured again on fresh seeds (``search.confirm_seeds``).

``resume=true`` (or ``resume=<search folder>``) continues a search: the finished trials are
kept, the count goes on to ``search.n_trials``, and a trial whose worker died on this
machine is marked failed. Trial ``n`` draws its values with the sampler seeded by
``search.seed + n``, so the sequence does not depend on where the search was interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import optuna
import pytorch_lightning as pl
import yaml
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import Trial, TrialState

from lightrec.errors import LightrecError
from lightrec.progress import say

SEARCH_FILE = "search.yaml"
BEST_FILE = "best.yaml"
JOURNAL_FILE = "study.journal"
IDENTITY_KEY = "lightrec_search"  # the study's user attribute naming what it searches
WORKER_ENV = "LIGHTREC_SEARCH_WORKER"  # set in the processes search.workers starts
FAILURES_IN_A_ROW = 3  # a worker gives up after this many failed trials in a row
SEARCH_KEYS = {"resume", "search.workers", "search.confirm_seeds"}  # not passed to workers
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class SearchInterrupted(Exception):
    """A signal stopped the search during a trial; the trial is marked failed."""

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(f"{signal_name} received: search stopped")
        self.signal_name = signal_name
        self.exit_code = exit_code


def space(params: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The search space of ``search.params``, written in Hydra's sweep grammar:
    ``choice(a, b)``, ``range(lo, hi[, step])``, ``interval(lo, hi)`` (floats),
    ``int(interval(lo, hi))`` and ``tag(log, interval(lo, hi))``.

    >>> d = space({"model.lr": "tag(log, interval(0.001, 0.1))", "data.max_len": "range(9, 11)"})
    >>> d["model.lr"].log, d["data.max_len"].choices
    (True, (9, 10))
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

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


def run(cmd: Any) -> int:
    """Run (or continue) the search a command line asks for; return the exit code."""
    from lightrec.cli import compose_job, drop_keys, preflight
    from lightrec.resume import resume_command

    fixed = drop_keys(cmd.overrides, {"resume"})
    job = dataclasses.replace(cmd, overrides=fixed, multirun=False)
    _no_sweeps(job)
    cfg = preflight(job, "train")
    resume = compose_job(cmd.config, cmd.overrides).resume
    distributions = _checked_space(job, cfg)
    folder, recorded = _folder(cmd, cfg, resume)
    folder = folder.resolve()  # workers, and a resume from another folder, find it
    storage = str(cfg.search.storage or recorded or folder / JOURNAL_FILE)
    study = _study(cfg, storage, distributions, resume)
    search = Search(cmd.config, fixed, cfg, folder, storage, distributions, study)
    _record(search, cmd)
    child = WORKER_ENV in os.environ
    try:
        _fail_dead_trials(search.study)
        if search.settings.workers > 1 and not child:
            _launch_workers(search)
        else:
            _work(search)
        if not child:
            _finish(search)
    except SearchInterrupted as e:
        print(
            f"interrupted ({e.signal_name}): the search is unfinished; continue it with:\n  "
            f"{resume_command(folder, [sys.argv[0], *_argv_of(cmd)])}",
            file=sys.stderr,
        )
        return e.exit_code
    return 0


def _argv_of(cmd: Any) -> list[str]:
    return ["train", cmd.config, "-m", *cmd.overrides]


def _no_sweeps(cmd: Any) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for line in cmd.overrides:
        try:
            (o,) = parser.parse_overrides([line])
        except Exception:  # noqa: BLE001 - the pre-flight names it
            continue
        if o.is_sweep_override():
            raise LightrecError(
                f"{line}: a search draws its values from search.params; give one value here "
                "(or add the key to search.params)"
            )


def _checked_space(cmd: Any, cfg: DictConfig) -> dict[str, BaseDistribution]:
    """The space, with every choice and both ends of every range checked as a trial would
    be (one sentence naming the value before any trial runs)."""
    from lightrec.cli import compose_job
    from lightrec.config_check import check_config

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
                check_config(compose_job(cmd.config, [*cmd.overrides, *_overrides(drawn)]))
            except LightrecError as e:
                raise LightrecError(f"search.params.{key} value {v!r}: {e}") from None
            except Exception as e:  # noqa: BLE001 - Hydra's own refusal of the value
                why = str(e).splitlines()[0]
                raise LightrecError(f"search.params.{key} value {v!r}: {why}") from None
    return distributions


def _overrides(drawn: Mapping[str, Any]) -> list[str]:
    return [override(k, v) for k, v in drawn.items()]


def _folder(cmd: Any, cfg: DictConfig, resume: Any) -> tuple[Path, str | None]:
    """The search's folder and the storage it recorded: a new one, or with ``resume`` the
    one it names (``true``: the latest of this config and search file)."""
    from lightrec.utils.path_utils import claim_job_dir

    name = _search_name(cmd)
    if resume in (False, None):
        stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        return claim_job_dir(cfg, "train", stamp + "-search"), None
    if resume is True:
        root = Path(cfg.paths.log_root).expanduser() / str(cfg.model_name)
        found = [
            (p.stat().st_mtime_ns, p.parent, rec)
            for p in root.rglob(SEARCH_FILE)
            if (rec := _read_record(p))
            and rec.get("config") == cmd.config
            and rec.get("hparams_search") == name
        ]
        if found:
            _, folder, rec = max(found, key=lambda f: (f[0], str(f[1])))
            return folder, rec.get("storage")
        if cfg.search.storage:  # joining a shared study from a machine without a folder
            stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
            return claim_job_dir(cfg, "train", stamp + "-search"), None
        raise LightrecError(
            f"resume=true: no search of {cmd.config!r} with hparams_search={name} under {root} "
            "to continue (start one without resume)"
        )
    folder = Path(str(resume)).expanduser()
    rec = _read_record(folder / SEARCH_FILE)
    if rec is None:
        raise LightrecError(f"resume={resume}: not a search folder (no readable {SEARCH_FILE})")
    if rec.get("config") != cmd.config or rec.get("hparams_search") != name:
        raise LightrecError(
            f"resume={resume} is a search of {rec.get('config')!r} with hparams_search="
            f"{rec.get('hparams_search')}, not of {cmd.config!r} with hparams_search={name}"
        )
    return folder, rec.get("storage")


def _search_name(cmd: Any) -> str:
    given = [o.split("=", 1)[1] for o in cmd.overrides if o.split("=", 1)[0] == "hparams_search"]
    return given[-1] if given else ""


def _read_record(path: Path) -> dict[str, Any] | None:
    """A search folder's ``search.yaml``, or None when it is missing or not a mapping."""
    try:
        rec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


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


def _identity(cfg: DictConfig, distributions: Mapping[str, BaseDistribution]) -> dict:
    """What makes two studies the same search: the model, the data, the direction and
    the space."""
    return {
        "model_name": str(cfg.model_name),
        "data": None if cfg.data.path is None else str(cfg.data.path),
        "monitor": str(cfg.checkpoint.monitor),
        "space": {k: json.loads(distribution_to_json(d)) for k, d in distributions.items()},
    }


def _study(
    cfg: DictConfig, storage: str, distributions: dict[str, BaseDistribution], resume: Any
) -> optuna.Study:
    """Create the study, or with ``resume`` load it; a study made by another search (a
    different model, data file, metric or space) is refused in one sentence."""
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
        storage=store, study_name=name, direction=direction, load_if_exists=True
    )
    wanted = _identity(cfg, distributions)
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


def _record(search: Search, cmd: Any) -> None:
    from lightrec.utils.io import atomic_write

    path = search.folder / SEARCH_FILE
    if path.is_file():
        return
    record = {
        "config": search.config,
        "hparams_search": _search_name(cmd),
        "study_name": str(search.settings.study_name),
        "storage": search.storage,
        "overrides": search.fixed,
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    atomic_write(path, lambda f: yaml.safe_dump(record, f, sort_keys=False))


def _worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_dead_trials(study: optuna.Study) -> None:
    """Mark failed the running trials whose worker, on this machine, is gone (killed): on
    another machine a trial is failed when that machine resumes."""
    me = _worker()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or {}
        if worker.get("host") == me["host"] and not _alive(int(worker.get("pid", -1))):
            study.tell(t.number, state=TrialState.FAIL)
            say(f"search: trial {t.number} was interrupted (its worker is gone): marked failed")


def _slot(study: optuna.Study, number: int) -> int:
    """Trial ``number``'s place in the search: the trials before it that count (finished,
    pruned or running). A failed trial leaves its place to the next, so a search resumed
    after a kill draws what it would have drawn uninterrupted; two workers' trials, each
    counting the other's, never share a place."""
    before = study.get_trials(deepcopy=False, states=COUNTED)
    return sum(t.number < number for t in before)


def _sampler(search: Search, slot: int) -> optuna.samplers.BaseSampler:
    """The sampler the trial in ``slot`` draws with: TPE seeded by ``search.seed + slot``."""
    s = search.settings
    return optuna.samplers.TPESampler(seed=s.seed + slot, n_startup_trials=s.n_startup_trials)


def _pruner(search: Search) -> optuna.pruners.BasePruner:
    s = search.settings
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=s.prune_startup_trials, n_warmup_steps=s.prune_warmup_epochs
        )
    return optuna.pruners.NopPruner()


def _work(search: Search) -> None:
    """Run trials until the study holds ``search.n_trials`` finished or running ones."""
    study = search.study
    study.pruner = _pruner(search)
    failures = 0
    previous = signal.signal(signal.SIGTERM, _sigterm_stops)
    try:
        while len(study.get_trials(deepcopy=False, states=COUNTED)) < search.settings.n_trials:
            trial = study.ask()
            trial.set_user_attr("worker", _worker())
            slot = _slot(study, trial.number)
            trial.set_user_attr("slot", slot)
            study.sampler = _sampler(search, slot)
            failures = _trial(search, trial, failures)
    except KeyboardInterrupt:
        raise SearchInterrupted("SIGINT", 128 + signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sigterm_stops(signum: int, frame: Any) -> None:
    """SIGTERM between trainings (training has its own handler): the search stops."""
    raise SearchInterrupted("SIGTERM", 128 + signum)


def _trial(search: Search, trial: Trial, failures: int) -> int:
    """Run one trial and tell the study how it ended; return the failures in a row."""
    from lightrec.resume import RunInterrupted

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
    overrides = _overrides(drawn)
    folder = search.folder / f"trial_{trial.number:03d}"
    trial.set_user_attr("run_dir", str(folder))
    k = search.settings.seeds_per_trial
    seeds = [None] if k == 1 else [search.cfg.seed + i for i in range(k)]
    reporter = ReportToTrial(trial, str(search.cfg.checkpoint.monitor))
    values = []
    for i, seed in enumerate(seeds):
        run_dir = folder if seed is None else folder / f"seed_{seed}"
        seed_override = [] if seed is None else [f"seed={seed}"]
        value = _train(search, [*overrides, *seed_override], run_dir, [reporter] if i == 0 else [])
        if reporter.pruned_at is not None:
            return float("nan"), reporter.pruned_at
        values.append(value)
    if k > 1:
        trial.set_user_attr("seed_values", values)
    return statistics.fmean(values), None


def _train(
    search: Search, overrides: list[str], run_dir: Path, callbacks: list[pl.Callback]
) -> float:
    """One training run of the search's config with ``overrides``, in ``run_dir``; its
    monitored validation value."""
    from lightrec import train
    from lightrec.cli import run_job
    from lightrec.utils.path_utils import quote_override

    # every value was composed and checked before the search (_checked_space); train.fit
    # checks the trial's whole config again, a refusal being the trial's LightrecError
    args = [*search.fixed, *overrides]
    hydra_args = ["hydra.job.name=train", f"hydra.run.dir={quote_override(str(run_dir))}"]
    monitored = run_job(
        search.config,
        [*args, *hydra_args],
        lambda cfg: train.fit(cfg, extra_callbacks=callbacks).monitored,
    )
    if monitored is None:
        raise LightrecError(f"{run_dir} has no validation value to search on")
    return float(monitored)


def _launch_workers(search: Search) -> None:
    """``search.workers`` processes of this command on this search's study, each with an
    equal share of the CPU threads and, with GPUs, one GPU each (round robin)."""
    from lightrec.cli import drop_keys
    from lightrec.utils.path_utils import quote_override

    n = int(search.settings.workers)
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
    gpus = _gpu_count()
    procs = []
    for i in range(n):
        env = {**os.environ, WORKER_ENV: str(i)}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
        if gpus and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        procs.append(subprocess.Popen(argv, env=env))
    say(f"search: {n} workers on {search.storage} (pids {', '.join(str(p.pid) for p in procs)})")

    def forward(signum: int, frame: Any) -> None:  # SIGTERM to this process alone
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        # Ctrl-C reaches every worker of the terminal's process group; one signalled
        # alone (kill -INT) hears it from here after a moment
        deadline = time.monotonic() + 5
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)
        codes = [p.wait() for p in procs]
        raise SearchInterrupted("SIGINT", 128 + signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if any(codes):
        # a worker stopped by a signal: 128 + its number, or minus it when nothing caught it
        interrupted = [128 - c if c < 0 else c for c in codes if c < 0 or c > 128]
        if interrupted:
            raise SearchInterrupted(signal.Signals(interrupted[0] - 128).name, interrupted[0])
        raise LightrecError(f"a search worker failed (exit codes {codes}); see its lines above")


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _finish(search: Search) -> None:
    """``best.yaml``: the best trial, the command that trains it, and its value measured
    again on ``search.confirm_seeds`` fresh seeds."""
    from lightrec.utils.io import atomic_write

    study = search.study
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise LightrecError(
            f"no trial of the search in {search.folder} finished: see the trials' lines above"
        )
    best = study.best_trial
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    params = _overrides(best.params)
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
        "train_command": shlex.join(
            ["python", "-m", "lightrec", "train", search.config, *_kept(search.fixed), *params]
        ),
        **({"confirmed": confirmed} if confirmed else {}),
    }
    atomic_write(search.folder / BEST_FILE, lambda f: yaml.safe_dump(record, f, sort_keys=False))
    line = f"search: best trial {best.number}, {record['monitor']} {record['best_value']:.4f}"
    if confirmed:
        line += f"; on {len(confirmed['seeds'])} fresh seeds {confirmed['mean']:.4f}"
    say(f"{line}; {search.folder / BEST_FILE}")


def _kept(fixed: list[str]) -> list[str]:
    """The command's overrides a single training of the best values keeps."""
    dropped = ("hparams_search", "search.", "paths.", "progress")
    return [o for o in fixed if not o.lstrip("+~").startswith(dropped)]


def _confirm(search: Search, number: int, params: list[str]) -> dict[str, Any] | None:
    """The best trial's values trained on fresh seeds (after every seed its trials used);
    kept from ``best.yaml`` when the same trial was confirmed on the same seeds before."""
    n = int(search.settings.confirm_seeds)
    if n == 0:
        return None
    first = search.cfg.seed + search.settings.seeds_per_trial
    seeds = list(range(first, first + n))
    before = _read_record(search.folder / BEST_FILE) or {}
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
