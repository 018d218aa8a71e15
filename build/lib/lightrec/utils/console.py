"""What a command prints for its user: one line at a time (:func:`say`), a bar over a long
loop in a terminal (:func:`track`), and one ``error:`` sentence with exit code 2 for bad input
(:func:`refuse`). ``progress`` (a top-level config key) picks ``auto`` (a bar when standard
output is a terminal, lines otherwise), ``bar``, ``lines`` or ``none``."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
EXIT_USER_ERROR = 2  # bad input: one sentence on standard error, nothing half-written


def mode(progress: str) -> str:
    """``bar``, ``lines`` or ``none`` for a ``progress`` setting (``auto``: is stdout a tty?)."""
    if progress == "auto":
        return "bar" if sys.stdout.isatty() else "lines"
    return progress


def say(line: str) -> None:
    """One line for the user on standard output (start and end of a stage)."""
    print(f"lightrec: {line}", flush=True)


def refuse(error: BaseException | str) -> int:
    """Print ``error: <sentence>`` on standard error; return the exit code of bad input."""
    print(f"error: {error}", file=sys.stderr)
    return EXIT_USER_ERROR


def track(items: Iterable[T], total: int, progress: str, desc: str) -> Iterator[T]:
    """``items``, with a TQDM bar in a terminal when there is more than one."""
    if mode(progress) != "bar" or total <= 1:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, leave=False, dynamic_ncols=True)
