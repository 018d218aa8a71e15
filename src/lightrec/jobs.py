"""A job, from a command line to a finished stage; the CLI, ``best`` and the searches all run
jobs through here. A training or predict job runs in this order, and a refused job makes no
folder:

1. the command is parsed (:func:`parse`; the stage is the mode, never guessed from a file
   name);
2. every job it names is composed with Hydra's compose API and checked
   (:func:`lightrec.config.check.check_config`), each value of a swept key in turn: a bad
   one is one ``error:`` sentence and exit 2, before anything is written (:func:`preflight`);
3. only then is the job's folder claimed (:func:`lightrec.utils.path_utils.claim_job_dir`)
   and Hydra runs the job in it (:func:`run_stage`, :func:`run_job`);
4. what only the job can find (a data file's rows) is refused by :func:`guarded`, which
   also removes the job's folder when Hydra's own files are all it holds.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from lightrec.config.check import check_config
from lightrec.data import cache
from lightrec.errors import LightrecError
from lightrec.serving import predict
from lightrec.training import fit
from lightrec.training.resume import RunInterrupted, resume_command
from lightrec.utils.console import refuse
from lightrec.utils.io import unwritable
from lightrec.utils.parallel import end_process_group
from lightrec.utils.path_utils import (
    CONFIG_DIR,
    claim_job_dir,
    job_root,
    quote_override,
    resuming,
    run_to_resume,
    stamp,
)

T = TypeVar("T")


# Hydra's own commands, passed through without a pre-flight: the option and whether it
# takes a value
HYDRA_FLAGS = {
    "--cfg": True,
    "-c": True,
    "--package": True,
    "-p": True,
    "--resolve": False,
    "--info": False,
    "-i": False,
    "--hydra-help": False,
}


@dataclass
class Command:
    """A parsed command line of a config mode."""

    mode: str
    config: str
    overrides: list[str] = field(default_factory=list)
    multirun: bool = False
    hydra_flags: list[str] = field(default_factory=list)  # --cfg job, --info, ...

    @property
    def given(self) -> set[str]:
        """The keys the user's overrides set."""
        return {o.split("=", 1)[0].lstrip("+~") for o in self.overrides}


def parse(argv: list[str], default_config: str | None) -> Command:
    """The mode, the config, ``-m``, Hydra's own flags and the overrides of a command line.

    >>> c = parse(["train", "ease", "-m", "model.lam=1,2"], None)
    >>> c.mode, c.config, c.multirun, c.overrides
    ('train', 'ease', True, ['model.lam=1,2'])
    >>> parse(["both", "--config-name", "pop", "seed=1"], "ease").config
    'pop'
    """
    mode, *rest = argv
    config: str | None = None
    cmd = Command(mode, "")
    i = 0
    while i < len(rest):
        arg = rest[i]
        i += 1
        if arg in ("-m", "--multirun"):
            cmd.multirun = True
        elif arg in ("--config-name", "-cn") or arg.startswith("--config-name="):
            if "=" in arg:
                config = arg.split("=", 1)[1]
            elif i < len(rest):
                config, i = rest[i], i + 1
            else:
                raise LightrecError(f"{arg} needs a config name")
        elif arg in HYDRA_FLAGS:
            cmd.hydra_flags.append(arg)
            if HYDRA_FLAGS[arg] and i < len(rest):
                cmd.hydra_flags.append(rest[i])
                i += 1
        elif arg.startswith("-"):
            raise LightrecError(f"unknown option {arg!r} (see python -m lightrec --help)")
        elif "=" in arg or arg.startswith(("+", "~")):
            cmd.overrides.append(arg)
        elif config is None and not cmd.overrides:
            config = arg
        else:
            raise LightrecError(
                f"unexpected argument {arg!r}: overrides are key=value (the config comes first)"
            )
    config = config or default_config
    if not config:
        raise LightrecError(f"{mode} needs a config, e.g. python -m lightrec {mode} ease")
    if not (CONFIG_DIR / f"{config}.yaml").is_file():
        raise LightrecError(f"no config {config!r} (configs/{config}.yaml does not exist)")
    cmd.config = config
    return cmd


def drop_keys(overrides: list[str], keys: set[str]) -> list[str]:
    """``overrides`` without those that set one of ``keys``."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in keys]


def split_overrides(overrides: list[str]) -> tuple[list[str], list[Override]]:
    """``overrides`` parsed once by Hydra's override grammar: the lines that set one value,
    and the sweeps (``key=a,b``, ``choice(...)``, ``range(...)``, ``interval(...)``,
    ``glob(...)``); a line the grammar refuses is one sentence.

    >>> fixed, sweeps = split_overrides(["seed=1", "model.lam=1,2"])
    >>> fixed, [s.get_key_element() for s in sweeps]
    (['seed=1'], ['model.lam'])
    """
    parser = OverridesParser.create()
    fixed: list[str] = []
    sweeps: list[Override] = []
    for line in overrides:
        try:
            (o,) = parser.parse_overrides([line])
        except HydraException as e:
            why = str(e).splitlines()[0]
            raise LightrecError(f"the override {line!r} cannot be parsed ({why})") from None
        if o.is_sweep_override():
            sweeps.append(o)
        else:
            fixed.append(line)
    return fixed, sweeps


def compose_job(config: str, overrides: list[str]) -> DictConfig:
    """``configs/<config>.yaml`` with ``overrides``, composed by Hydra's compose API, without
    Hydra's own node."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=config, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def jobs(cmd: Command) -> list[list[str]]:
    """The overrides of each job a command runs, for the pre-flight: one job, or for a
    sweep (``key=a,b``, ``choice(...)``, ``range(...)``) the first values of every swept
    key plus each further value of each key in turn (each job checks its own again)."""
    fixed, sweeps = split_overrides(cmd.overrides)
    swept: list[list[str]] = []
    for o in sweeps:
        if not cmd.multirun:
            raise LightrecError(f"{o.input_line} sweeps several values: add -m to run them all")
        kind = o.value_type.name if o.value_type is not None else ""
        if kind.endswith(("CHOICE_SWEEP", "RANGE_SWEEP")) and not kind.startswith("GLOB"):
            key = o.get_key_element()
            swept.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        # interval() and glob() cannot be listed here: each job checks its own value
    firsts = [values[0] for values in swept]
    extra = [[*firsts[:i], v, *firsts[i + 1 :]] for i, vs in enumerate(swept) for v in vs[1:]]
    return [[*fixed, *job] for job in [firsts, *extra]]


def preflight(cmd: Command, stage: str) -> DictConfig:
    """Compose and check every job of ``cmd`` for ``stage`` before anything is made; return
    the first job's config."""
    first: DictConfig | None = None
    try:
        for overrides in jobs(cmd):
            cfg = compose_job(cmd.config, overrides)
            check_config(cfg)
            first = first or cfg
    except (HydraException, OmegaConfBaseException) as e:
        msg = user_error_message(e) or str(e).splitlines()[0].strip()
        if "not in struct" in msg and getattr(e.__cause__, "full_key", None):
            msg = f"unknown config key {e.__cause__.full_key}"  # type: ignore[union-attr]
        raise LightrecError(msg) from None
    assert first is not None
    root_key, root = job_root(first, stage)
    if problem := unwritable(root):
        raise LightrecError(f"{root_key}={root} cannot be written ({problem})")
    if stage == "train" and resuming(first):
        if cmd.multirun:
            raise LightrecError("resume continues one run; it cannot be combined with -m")
        run_to_resume(first.resume, first.paths.log_root, first.model_name)
    return first


def run_stage(cmd: Command, stage: str, exits: bool = True) -> Path | None:
    """Pre-flight, claim the job's folder, then let Hydra run the stage's job in it (a search
    is :mod:`lightrec.search`'s, not a stage's); return that folder (None for Hydra's own
    commands, or a folder the command line chose): the caller's run, never another
    process's newest. ``exits=False`` (Python, a notebook): a user error raises
    :class:`LightrecError` and an interruption ``KeyboardInterrupt``, never ``sys.exit``."""
    if cmd.hydra_flags:  # Hydra's own commands (--cfg job, --info): nothing runs
        _hydra_run(stage, cmd.config, [*cmd.hydra_flags, *cmd.overrides], exits)
        return None
    if cmd.multirun and cmd.mode in ("both", "clean-both"):
        raise LightrecError("-m sweeps train alone: run the sweep with train, then predict a run")
    cfg = preflight(cmd, stage)
    extra = [] if "hydra.job.name" in cmd.given else [f"hydra.job.name={stage}"]
    folder_key = "hydra.sweep.dir" if cmd.multirun else "hydra.run.dir"
    folder = None
    if folder_key not in cmd.given:
        if stage == "train" and not cmd.multirun and resuming(cfg):
            folder = run_to_resume(cfg.resume, cfg.paths.log_root, cfg.model_name).root
        else:
            folder = claim_job_dir(cfg, stage, stamp("-multirun" if cmd.multirun else ""))
        extra.append(f"{folder_key}={quote_override(str(folder))}")
    args = [*(["-m"] if cmd.multirun else []), *cmd.overrides, *extra]
    _hydra_run(stage, cmd.config, args, exits)
    return None if folder is None else Path(folder)


def _hydra_run(stage: str, config: str, args: list[str], exits: bool = True) -> None:
    """Hydra's main for one stage with ``args`` as its command line; a user error in the job
    is one sentence and exit 2 (:func:`guarded`), or raised (:func:`raising`)."""
    work: Callable[[DictConfig], object] = fit.run if stage == "train" else predict.run
    guard = guarded if exits else raising
    run_job(config, args, lambda cfg: guard(work, cfg))


def run_job(config: str, args: list[str], work: Callable[[DictConfig], T]) -> T:
    """Hydra's main with ``args`` as its command line, running ``work`` on the composed
    config in the folder ``args`` name; returns what ``work`` returned, and raises what it
    raised (Hydra would print it and exit). The job sees the user's own command line in
    ``sys.argv`` (data-parallel workers are started with it, and an interrupted run prints
    it)."""
    users_argv = sys.argv
    outcome: dict[str, object] = {}

    def task(cfg: DictConfig) -> None:
        sys.argv = users_argv
        try:
            outcome["value"] = work(cfg)
        except BaseException as e:  # noqa: BLE001 - raised again below, outside Hydra
            outcome["error"] = e
        finally:
            end_process_group(finished="error" not in outcome)

    entry = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config)(task)
    GlobalHydra.instance().clear()
    sys.argv = [users_argv[0], *args]
    try:
        entry()
    finally:
        sys.argv = users_argv
        GlobalHydra.instance().clear()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")  # type: ignore[return-value]


def clean(cmd: Command) -> None:
    """Remove this toolkit's cache entries from the config's ``data_cache.cache_dir``."""
    try:
        cache_dir = compose_job(cmd.config, cmd.overrides).data_cache.cache_dir
    except (HydraException, OmegaConfBaseException) as e:
        raise LightrecError(user_error_message(e) or str(e).splitlines()[0]) from None
    removed = cache.clean(cache_dir)
    print(f"removed {len(removed)} lightrec cache entries from {cache_dir}")


def user_error_message(exc: BaseException) -> str | None:
    """The one-sentence message for an error caused by input, or None for a bug."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:  # instantiate() and resolvers wrap errors
        chain.append(seen)
        seen = seen.__cause__
    for e in chain:
        if isinstance(e, LightrecError):
            return str(e)
    for e in chain:
        if isinstance(e, OmegaConfBaseException):
            key = getattr(e, "full_key", None)
            first = str(getattr(e, "msg", None) or e).splitlines()[0]
            return f"config key {key!r}: {first}" if key else f"config error: {first}"
    if isinstance(exc, InstantiationException):
        return f"config error: {str(exc).splitlines()[0]}"
    return None


def guarded(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """Run ``fn(cfg)``. On a user error print ``error: <sentence>`` and exit 2 (removing the
    job's folder when Hydra's own files are all it holds); on Ctrl-C or SIGTERM print how
    to continue the run and exit with 128 + the signal's number."""
    try:
        return fn(cfg)
    except RunInterrupted as e:
        print(
            f"interrupted ({e.signal_name}): {e.run.root} is unfinished (no metrics.json); "
            f"continue it with:\n  {resume_command(e.run)}",
            file=sys.stderr,
        )
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted: nothing was trained yet", file=sys.stderr)
        _remove_unused_job_folder()
        sys.exit(130)
    except Exception as e:
        msg = user_error_message(e)
        if msg is None:
            raise
        _remove_unused_job_folder()
        sys.exit(refuse(msg))


def raising(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """:func:`guarded` for Python callers: a user error is a :class:`LightrecError` with
    the sentence the command line prints (the job's unused folder removed), Ctrl-C or a
    signal a ``KeyboardInterrupt`` whose message says how to continue the run."""
    try:
        return fn(cfg)
    except RunInterrupted as e:
        raise KeyboardInterrupt(
            f"interrupted ({e.signal_name}): {e.run.root} is unfinished; continue it with "
            "the same call and resume=True"
        ) from None
    except KeyboardInterrupt:
        _remove_unused_job_folder()
        raise
    except Exception as e:
        msg = user_error_message(e)
        if msg is None:
            raise
        _remove_unused_job_folder()
        raise LightrecError(msg) from None


def _remove_unused_job_folder() -> None:
    """A job refused for its input leaves nothing of its own in its folder, and the folder
    goes (never one with a file of the run's)."""
    if not HydraConfig.initialized():
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    if not folder.is_dir():
        return
    files = [f for f in folder.rglob("*") if f.is_file()]
    if all(f.suffix == ".log" or ".hydra" in f.relative_to(folder).parts for f in files):
        logging.shutdown()  # close the job's log file before its folder goes
        shutil.rmtree(folder, ignore_errors=True)
