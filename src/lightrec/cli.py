"""The one entry: ``python -m lightrec MODE [CONFIG] [-m] [key=value ...]``.

Every stage of every config goes through :func:`main`; ``run.sh``, the named scripts
(``train_multi_vae.py``, ``run_bert4rec.sh``, ...) and the ``lightrec`` command are thin
aliases of it. A training or predict job runs in this order, and a refused job makes no
folder:

1. the command is parsed here (the stage is the mode, never guessed from a file name);
2. every job it names is composed with Hydra's compose API and checked
   (:func:`lightrec.config_check.check_config`), each value of a swept key in turn: a bad
   one is one ``error:`` sentence and exit 2, before anything is written;
3. only then is the job's folder claimed (:func:`lightrec.utils.path_utils.claim_job_dir`)
   and Hydra runs the job in it;
4. what only the job can find (a data file's rows) is refused by :func:`guarded`, which
   also removes the job's folder when Hydra's own files are all it holds.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lightrec import quiet
from lightrec.errors import LightrecError
from lightrec.resume import RunInterrupted, resume_command
from lightrec.utils.path_utils import resuming

log = logging.getLogger("lightrec")
T = TypeVar("T")
EXIT_USER_ERROR = 2

CONFIG_MODES = {
    "train": "train a config (a sweep or a search with -m)",
    "predict": "submission.csv from the latest finished run of a config (or run_dir=...)",
    "both": "train, then predict with the new run",
    "clean": "remove this toolkit's cache entries (lightrec-* in data_cache.cache_dir)",
    "clean-train": "clean, then train",
    "clean-both": "clean, then train and predict",
}
STAGES = {"train": ("train",), "predict": ("predict",), "both": ("train", "predict")}
TOOL_MODES = {
    "best": "train the recipe's members (best.members) and blend or re-rank them",
    "blend": "blend finished runs: blend RUN_DIR RUN_DIR ... (blend --help)",
    "rerank": "re-rank finished runs' candidates with a GBDT ranker (rerank --help)",
    "export": "a run's scorer as TorchScript, checked against the toolkit (export --help)",
    "recommend": "a run's recommendations with scores, also for new histories (recommend --help)",
    "report": "the results table from finished runs (report --help)",
    "serve": "a run's model behind HTTP on 127.0.0.1: serve RUN_DIR [--port] (serve --help)",
    "submission": "hide items of a log, or score a submission (submission --help)",
}
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


def usage(default_config: str | None = None) -> str:
    width = max(map(len, {**CONFIG_MODES, **TOOL_MODES}))
    lines = [
        "usage: python -m lightrec MODE [CONFIG] [-m] [key=value ...]",
        "       python -m lightrec best [key=value ...]",
        "       python -m lightrec blend|export|recommend|rerank|report|serve|submission ARGS",
        "",
        "modes:",
        *(f"  {m:<{width}}  {what}" for m, what in {**CONFIG_MODES, **TOOL_MODES}.items()),
        "",
        "CONFIG   a file of configs/ without .yaml"
        + (f" (default: {default_config})" if default_config else ""),
        "-m       a Hydra sweep (key=a,b), or a search (hparams_search=<model>; resume=true)",
        "example  python -m lightrec both multi_vae_v3 data.path=my_log.csv seed=1",
    ]
    return "\n".join(lines)


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
    from lightrec.utils.path_utils import CONFIG_DIR

    if not (CONFIG_DIR / f"{config}.yaml").is_file():
        raise LightrecError(f"no config {config!r} (configs/{config}.yaml does not exist)")
    cmd.config = config
    return cmd


def main(argv: list[str] | None = None, default_config: str | None = None) -> int:
    """Run a command line (``sys.argv[1:]`` by default); return the exit code. A user error
    is one ``error:`` sentence on standard error and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--default-config"] and len(argv) >= 2:  # the named run scripts
        default_config, argv = argv[1], argv[2:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(default_config), file=sys.stderr if not argv else sys.stdout)
        return 0 if argv else EXIT_USER_ERROR
    mode, rest = argv[0], argv[1:]
    if mode in TOOL_MODES and mode != "best":
        return _tool(mode, rest)
    if mode not in CONFIG_MODES and mode != "best":
        print(f"error: unknown mode {mode!r}\n{usage(default_config)}", file=sys.stderr)
        return EXIT_USER_ERROR
    if any(a in ("-h", "--help") for a in rest):
        print(usage(default_config))
        return 0
    quiet.silence()
    try:
        if mode == "best":
            return _best(rest)
        cmd = parse(argv, default_config)
        if cmd.mode.startswith("clean"):
            _clean(cmd)
        for stage in STAGES.get(cmd.mode.removeprefix("clean-"), ()):
            _run_stage(cmd if stage == "train" else _without_resume(cmd), stage)
    except LightrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def _without_resume(cmd: Command) -> Command:
    """The command with its ``resume=`` override dropped: in ``both``, the training stage
    resumes the run, and predict then uses it like any finished run."""
    return dataclasses.replace(cmd, overrides=drop_keys(cmd.overrides, {"resume"}))


def drop_keys(overrides: list[str], keys: set[str]) -> list[str]:
    """``overrides`` without those that set one of ``keys``."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in keys]


def _tool(mode: str, args: list[str]) -> int:
    from lightrec import api, blend, export, report, rerank, serve, submission

    mains: dict[str, Callable[[list[str]], int]] = {
        "blend": blend.main,
        "export": export.main,
        "recommend": api.main,
        "rerank": rerank.main,
        "report": report.main,
        "serve": serve.main,
        "submission": submission.main,
    }
    return mains[mode](args)


def compose_job(config: str, overrides: list[str]) -> DictConfig:
    """``configs/<config>.yaml`` with ``overrides``, composed by Hydra's compose API, without
    Hydra's own node."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lightrec.utils.path_utils import CONFIG_DIR

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
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed: list[str] = []
    swept: list[list[str]] = []
    for line in cmd.overrides:
        try:
            (o,) = parser.parse_overrides([line])
        except HydraException as e:
            why = str(e).splitlines()[0]
            raise LightrecError(f"the override {line!r} cannot be parsed ({why})") from None
        if not o.is_sweep_override():
            fixed.append(line)
            continue
        if not cmd.multirun:
            raise LightrecError(f"{line} sweeps several values: add -m to run them all")
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
    from lightrec.config_check import check_config
    from lightrec.utils.io import unwritable
    from lightrec.utils.path_utils import job_root, run_to_resume

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


def _run_stage(cmd: Command, stage: str) -> None:
    """Pre-flight, claim the job's folder, then let Hydra run the stage's job in it."""
    from lightrec.utils.path_utils import claim_job_dir, quote_override, run_to_resume

    if cmd.hydra_flags:  # Hydra's own commands (--cfg job, --info): nothing runs
        _hydra_run(stage, cmd.config, [*cmd.hydra_flags, *cmd.overrides])
        return
    if cmd.multirun and cmd.mode in ("both", "clean-both"):
        raise LightrecError("-m sweeps train alone: run the sweep with train, then predict a run")
    if stage == "train" and "hparams_search" in cmd.given:
        if not cmd.multirun:
            raise LightrecError(
                f"a search runs with -m: python -m lightrec train {cmd.config} -m "
                "hparams_search=<file> [key=value ...]"
            )
        from lightrec import search

        if code := search.run(cmd):
            sys.exit(code)
        return
    cfg = preflight(cmd, stage)
    extra = [] if "hydra.job.name" in cmd.given else [f"hydra.job.name={stage}"]
    folder_key = "hydra.sweep.dir" if cmd.multirun else "hydra.run.dir"
    if folder_key not in cmd.given:
        if stage == "train" and not cmd.multirun and resuming(cfg):
            folder = run_to_resume(cfg.resume, cfg.paths.log_root, cfg.model_name).root
        else:
            stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
            folder = claim_job_dir(cfg, stage, stamp + ("-multirun" if cmd.multirun else ""))
        extra.append(f"{folder_key}={quote_override(str(folder))}")
    _hydra_run(stage, cmd.config, [*(["-m"] if cmd.multirun else []), *cmd.overrides, *extra])


def _hydra_run(stage: str, config: str, args: list[str]) -> None:
    """Hydra's main for one stage with ``args`` as its command line; a user error in the job
    is one sentence and exit 2 (:func:`guarded`)."""
    from lightrec import predict, train

    work: Callable[[DictConfig], object] = train.run if stage == "train" else predict.run
    run_job(config, args, lambda cfg: guarded(work, cfg))


def run_job(config: str, args: list[str], work: Callable[[DictConfig], T]) -> T:
    """Hydra's main with ``args`` as its command line, running ``work`` on the composed
    config in the folder ``args`` name; returns what ``work`` returned, and raises what it
    raised (Hydra would print it and exit). The job sees the user's own command line in
    ``sys.argv`` (data-parallel workers are started with it, and an interrupted run prints
    it)."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from lightrec.utils.path_utils import CONFIG_DIR

    users_argv = sys.argv
    outcome: dict[str, object] = {}

    def task(cfg: DictConfig) -> None:
        sys.argv = users_argv
        try:
            outcome["value"] = work(cfg)
        except BaseException as e:  # noqa: BLE001 - raised again below, outside Hydra
            outcome["error"] = e

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


def _clean(cmd: Command) -> None:
    from lightrec.data import cache

    try:
        cache_dir = compose_job(cmd.config, cmd.overrides).data_cache.cache_dir
    except (HydraException, OmegaConfBaseException) as e:
        raise LightrecError(user_error_message(e) or str(e).splitlines()[0]) from None
    removed = cache.clean(cache_dir)
    print(f"removed {len(removed)} lightrec cache entries from {cache_dir}")


def _best(overrides: list[str]) -> int:
    """Train each member the recipe names (``best.members``; overrides reach every one, after
    the recipe's own ``best.overrides`` for that member), then combine their latest finished
    runs (``best.combine``); the submission's path is the last line printed."""
    from lightrec import blend, rerank
    from lightrec.utils.path_utils import latest_finished_run

    try:
        plan = compose_job("pop", overrides).best  # the recipe's plan, read from any config
    except (HydraException, OmegaConfBaseException) as e:
        raise LightrecError(user_error_message(e) or str(e).splitlines()[0]) from None
    names = list(plan.members)
    if len(names) < 2 or plan.combine not in ("blend", "rerank"):
        raise LightrecError(
            f"best.members={names} and best.combine={plan.combine!r}: name two configs or more "
            "(for one: python -m lightrec both CONFIG) and combine with blend or rerank"
        )
    extra = OmegaConf.to_container(plan.overrides) or {}
    if not isinstance(extra, dict) or not all(isinstance(v, list) for v in extra.values()):
        raise LightrecError("best.overrides must map a member to a list of key=value overrides")
    members = [
        parse(["train", name, *map(str, extra.get(name, [])), *overrides], None) for name in names
    ]
    done = _resume_plan(members) if "resume" in members[0].given else set()
    log_roots = [  # every member checked before any trains
        compose_job(m.config, m.overrides).paths.log_root
        if i in done
        else preflight(m, "train").paths.log_root
        for i, m in enumerate(members)
    ]
    for i, member in enumerate(members):
        if i not in done:
            _run_stage(member, "train")
    runs = [
        str(latest_finished_run(root, m.config).root)
        for root, m in zip(log_roots, members, strict=True)
    ]
    if plan.combine == "rerank":
        args = [*runs, "--max-users", str(plan.max_users)]
        return rerank.main(args + (["--available-only"] if plan.available_only else []))
    return blend.report_blend(runs, max_users=plan.max_users)


def _resume_plan(members: list[Command]) -> set[int]:
    """``best ... resume=true`` after an interruption: a member with an unfinished run
    resumes it, one that already finished is kept (its latest finished run is blended), one
    that never started trains afresh. Returns the members kept as they are."""
    from lightrec.utils.path_utils import finished_runs, unfinished_runs

    kept: set[int] = set()
    for i, member in enumerate(members):
        cfg = compose_job(member.config, member.overrides)
        if cfg.resume in (False, None):
            return kept
        if cfg.resume is not True:
            raise LightrecError("best resumes with resume=true (each member finds its own run)")
        root, name = cfg.paths.log_root, cfg.model_name
        if unfinished_runs(root, name):
            continue
        if finished := finished_runs(root, name):
            print(f"best: {name} already finished ({finished[-1].root}); kept", file=sys.stderr)
            kept.add(i)
        else:
            member.overrides.append("resume=false")  # it never started: train it
    return kept


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
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


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
