"""Entry-point guard: user errors become one sentence on stderr and exit code 2."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable
from typing import TypeVar

from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lightrec.errors import LightrecError

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
    """Run ``fn(cfg)``; on a user error print ``error: <sentence>`` and exit 2."""
    try:
        return fn(cfg)
    except Exception as e:
        msg = user_error_message(e)
        if msg is None:
            raise
        log.error(msg)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
