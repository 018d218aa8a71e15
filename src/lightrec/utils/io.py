"""Atomic file writing: outputs appear whole or not at all; a full disk is one sentence."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lightrec.errors import LightrecError

TEMP_SUFFIX = ".tmp"
STALE_AFTER_S = 600.0  # a temporary file this old is a killed write's, not one in progress
# below this much free space a folder counts as full before anything is written to it, and
# a writer that hides its errno (torch's zip writer) is taken to have failed for space
MIN_FREE_BYTES = 1 << 20


class NoSpace(LightrecError):
    """A write failed because its disk is full (nothing was left at the final path)."""


def free_bytes(folder: str | Path) -> int | None:
    """Free space on the disk of ``folder`` (or of its nearest existing parent)."""
    at = Path(folder).expanduser().absolute()
    while not at.exists() and at != at.parent:
        at = at.parent
    try:
        return shutil.disk_usage(at).free
    except OSError:
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "unknown space"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"


def no_space(path: str | Path, free: int | None) -> NoSpace:
    """The one sentence for a write to ``path`` that ran out of space (``free`` bytes were
    left when it failed)."""
    path = Path(path)
    return NoSpace(
        f"the disk of {path.parent} is full ({_size(free)} free): {path.name} was not "
        "written; free some space or point this output elsewhere"
    )


def out_of_space(error: BaseException, free: int | None, written: int = 0) -> bool:
    """Whether a failed write failed for want of space: ENOSPC or EDQUOT, or another error
    of a writer that hides the errno (torch's zip writer: "unexpected pos") with under 1 MiB
    left or less room left than it had written (``written`` bytes: a file system can refuse
    a write with a few MiB still free; seen on a 53 MiB checkpoint, with 60 MiB free once it
    was removed).

    >>> out_of_space(RuntimeError("unexpected pos"), free=7 << 20, written=53 << 20)
    True
    >>> out_of_space(RuntimeError("unexpected pos"), free=7 << 30, written=53 << 20)
    False
    """
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return (
        isinstance(error, (OSError, RuntimeError))
        and free is not None
        and free < max(MIN_FREE_BYTES, written)
    )


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


def _flip_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _flip_umask()  # one flip, while importing: before any writer thread


def _umask() -> int:
    """This process's umask, read from ``/proc/self/status`` where the system has it: setting
    it to read it (and back) races with another thread's file creation, which would get the
    flipped mask. Elsewhere, the umask read when this module was imported."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _UMASK_AT_IMPORT


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path`` (text in UTF-8), flush it to the
    disk, give it the mode a plain ``open`` would (0666 less the umask: a submission is
    0644 under the usual umask 022, not the temporary file's 0600), rename it into place
    and flush the folder, so that a crash leaves the old file or the new one. A full disk is
    :class:`NoSpace`, with the temporary file gone."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = temp_beside(path)
        with (
            os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="", encoding="utf-8") as f
        ):
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except BaseException as e:
        free = free_bytes(path.parent)  # before the temporary file frees its space
        written = 0
        if tmp is not None:
            try:
                written = os.stat(tmp).st_size
            except OSError:
                pass
            Path(tmp).unlink(missing_ok=True)
        if out_of_space(e, free, written):
            raise no_space(path, free) from None
        raise
    return path


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to the disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse to sync a folder; the file itself is on the disk
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8), atomically."""

    def put(f: IO[Any]) -> None:
        f.write(text)

    return atomic_write(path, put)


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
    free = free_bytes(root)
    if free is not None and free < MIN_FREE_BYTES:
        return f"its disk is full ({_size(free)} free)"
    return None
