"""Atomic file writing: outputs appear whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"
STALE_AFTER_S = 600.0  # a temporary file this old is a killed write's, not one in progress


def temp_beside(path: Path) -> tuple[int, str]:
    """``(fd, name)`` of a new temporary file ``.<name>.<random>.tmp`` in ``path``'s folder:
    the one naming of every atomic write (so leftovers can be found)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)


def remove_stale_temps(folder: str | Path, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the temporary files of atomic writes that were killed (``.<name>.*.tmp`` in
    ``folder``, older than ``older_than_s``: a younger one may be a write in progress)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    now = time.time()
    removed = []
    for tmp in root.glob(f".*{TEMP_SUFFIX}"):
        try:
            if tmp.is_file() and not tmp.is_symlink() and now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def atomic_write(path: str | Path, write: Callable[[IO[str]], None]) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=False))


def unwritable(folder: str | Path) -> str | None:
    """Why files cannot be written into ``folder`` (made if missing), or None if they can."""
    root = Path(folder).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lightrec-probe-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None
