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
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lightrec.errors import LightrecError
from lightrec.resume import RunInterrupted, resume_command

log = logging.getLogger("lightrec")
T = TypeVar("T")
EXIT_USER_ERROR = 2


# a deprecation inside pytorch_lightning itself, printed on every run; nothing to act on
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")


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
        log.error(msg)
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
