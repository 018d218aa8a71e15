"""Entry-point guard: user errors become one sentence on stderr and exit code 2."""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from lightrec.errors import LightrecError
from lightrec.resume import RunInterrupted, resume_command

log = logging.getLogger("lightrec")
T = TypeVar("T")
EXIT_USER_ERROR = 2


# Warnings a user cannot act on, silenced for the entry points (one list, here):
# - a deprecation inside pytorch_lightning itself, printed on every run;
# - Lightning's advice to sync logged metrics across processes: ours are sums reduced
#   before dividing (models/base.py), syncing their means again would change nothing;
# - data loading in the main process is by design (batches are cheap slices);
# - tiny data with fewer steps per epoch than the logging interval;
# - a resumed run writing into its own checkpoint folder, which is the point of resuming.
for _message in (
    ".*isinstance.treespec, LeafSpec.*",
    ".*It is recommended to use .self.log.* sync_dist=True.*",
    ".*does not have many workers.*",
    ".*is smaller than the logging interval.*",
    ".*Checkpoint directory .* exists and is not empty.*",
):
    warnings.filterwarnings("ignore", message=_message)


def user_error_message(exc: BaseException) -> str | None:
    """The one-sentence message for an error caused by input, or None for a bug."""
    seen: BaseException | None = exc
    while seen is not None:  # instantiate() wraps errors raised in constructors
        if isinstance(seen, LightrecError):
            return str(seen)
        if isinstance(seen, OmegaConfBaseException):
            key = getattr(seen, "full_key", None)
            first = str(getattr(seen, "msg", None) or seen).splitlines()[0]
            return f"config key {key!r}: {first}" if key else f"config error: {first}"
        seen = seen.__cause__
    if isinstance(exc, InstantiationException):
        return f"config error: {str(exc).splitlines()[0]}"
    return None


def preflight(config_name: str, entry_file: str, argv: list[str] | None = None) -> None:
    """Before Hydra runs: compose the config the command asks for and check every value
    (:func:`lightrec.config_check.check_config`); a config Hydra cannot compose or a bad
    value is one ``error:`` sentence and exit 2, before any folder is made. For a sweep
    the first value of each swept key is checked (each job checks its own again)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from lightrec.config_check import check_config
    from lightrec.utils.io import unwritable
    from lightrec.utils.path_utils import run_to_resume

    args = get_args_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return  # Hydra's own commands
    if args.config_path or args.config_dir:
        return  # another config tree: Hydra reports its own errors
    name = args.config_name or config_name
    try:
        fixed: list[str] = []  # the overrides of one job; swept keys get each value in turn
        swept: list[list[str]] = []
        parser = OverridesParser.create()
        for line in args.overrides:
            try:
                (o,) = parser.parse_overrides([line])
            except HydraException as e:
                why = str(e).splitlines()[0]
                raise LightrecError(f"the override {line!r} cannot be parsed ({why})") from None
            if not o.is_sweep_override():
                fixed.append(line)
            elif o.value_type is not None and o.value_type.name.endswith(
                ("CHOICE_SWEEP", "RANGE_SWEEP")
            ):
                key = o.get_key_element()
                swept.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        config_dir = str(Path(entry_file).resolve().parent / "configs")
        firsts = [values[0] for values in swept]
        jobs = [firsts] + [
            [*firsts[:i], v, *firsts[i + 1 :]] for i, vs in enumerate(swept) for v in vs[1:]
        ]
        for job in jobs:
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
                cfg = compose(config_name=name, overrides=[*fixed, *job])
            GlobalHydra.instance().clear()
            with open_dict(cfg):
                cfg.pop("hydra", None)
            check_config(cfg)
        predicting = Path(entry_file).stem.startswith("predict")
        root_key = "paths.predict_log_root" if predicting else "paths.log_root"
        folder = cfg.paths.predict_log_root if predicting else cfg.paths.log_root
        if problem := unwritable(folder):
            raise LightrecError(f"{root_key}={folder} cannot be written ({problem})")
        if cfg.resume not in (False, None):
            if args.multirun:
                raise LightrecError("resume continues one run; it cannot be combined with -m")
            run_to_resume(cfg.resume, cfg.paths.log_root, cfg.model_name)
    except (HydraException, OmegaConfBaseException, LightrecError) as e:
        GlobalHydra.instance().clear()
        msg = user_error_message(e) or str(e).splitlines()[0].strip()
        if isinstance(e, HydraException) and "primary config" in str(e):
            msg = f"no config {name!r} (configs/{name}.yaml does not exist)"
        elif "not in struct" in msg and getattr(e.__cause__, "full_key", None):
            msg = f"unknown config key {e.__cause__.full_key}"  # type: ignore[union-attr]
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


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
    """Hydra makes a job's folder before the job starts; a job refused for its input leaves
    nothing of its own there, and the folder goes (never one with a file of the run's)."""
    if not HydraConfig.initialized():
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    if not folder.is_dir():
        return
    files = [f for f in folder.rglob("*") if f.is_file()]
    if all(f.suffix == ".log" or ".hydra" in f.relative_to(folder).parts for f in files):
        logging.shutdown()  # close the job's log file before its folder goes
        shutil.rmtree(folder, ignore_errors=True)
