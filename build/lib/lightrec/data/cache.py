"""Content-keyed, atomic, pickle-free disk cache for prepared datasets.

An entry is a folder ``<cache_dir>/lightrec-<md5>/`` holding ``arrays.npz`` (numpy arrays,
loaded with ``allow_pickle=False``) and ``meta.json`` (id maps, statistics, the key's
inputs). The key is the MD5 of the format version, every parameter that shapes the result
and the MD5 of the data file's content, so editing the CSV or any split parameter is a miss.

Entries are written into a temporary folder and renamed, so a crash leaves no half entry.
Processes preparing data in the same cache folder at once (trainings started together, the
ranks of a data-parallel job) take turns through a lock on the folder (:func:`locked`): the
first builds the entry, the others find it. A cache folder that cannot be written is reported
by the caller and the run goes on without the cache.
A corrupt or truncated entry (bad JSON, a zip CRC error, missing or inconsistent arrays) is
reported with a warning, removed and rebuilt by the caller.

Hashing a large CSV takes a while, so the content MD5 is remembered per (path, size,
mtime_ns, inode) in ``lightrec-fingerprints.json``: the file is read again only when it changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lightrec.utils.io import NoSpace, remove_stale_temps, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: ids read as text (007 and 7 are two ids)
PREFIX = "lightrec-"
FINGERPRINTS = f"{PREFIX}fingerprints.json"


class CorruptEntry(Exception):
    """A cache entry exists but cannot be trusted."""


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _memo(cache_dir: str | Path | None) -> tuple[Path | None, dict[str, Any]]:
    memo_path = Path(cache_dir).expanduser() / FINGERPRINTS if cache_dir is not None else None
    if memo_path is None or not memo_path.exists():
        return memo_path, {}
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        return memo_path, {}
    return memo_path, memo if isinstance(memo, dict) else {}  # a garbage memo is rebuilt


def remembered_md5(path: str | Path, cache_dir: str | Path | None) -> str | None:
    """The MD5 remembered for this file as it is now (same size, mtime, inode), or None."""
    path = Path(path).resolve()
    hit = _memo(cache_dir)[1].get(str(path))
    if isinstance(hit, dict) and hit.get("stamp") == _stamp(path):
        return str(hit["md5"])
    return None


def file_md5(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """MD5 of a file's content, remembered in ``cache_dir`` per (path, size, mtime, inode)."""
    path = Path(path).resolve()
    if (known := remembered_md5(path, cache_dir)) is not None:
        return known
    stamp = _stamp(path)
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    memo_path, memo = _memo(cache_dir)
    if memo_path is not None:
        memo[str(path)] = {"stamp": stamp, "md5": digest}
        try:
            write_json(memo_path, memo)
        except (OSError, NoSpace) as e:  # a memo only saves hashing the file next time
            log.warning("the file hashes in %s were not remembered (%s)", memo_path, e)
    return digest


def cache_key(params: dict[str, Any], data_md5: str) -> str:
    """MD5 over the format version, the parameters and the data's content hash."""
    blob = json.dumps(
        {"format": FORMAT_VERSION, "params": params, "data_md5": data_md5},
        sort_keys=True,
        default=str,
    )
    return hashlib.md5(blob.encode()).hexdigest()


def entry_dir(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / f"{PREFIX}{key}"


def save(cache_dir: str | Path, key: str, arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write an entry atomically (temporary folder, then rename)."""
    final = entry_dir(cache_dir, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{PREFIX}{key}-", dir=final.parent))
    try:
        np.savez(tmp / "arrays.npz", **arrays)  # type: ignore[arg-type]  # (numpy stubs)
        lengths = {k: int(v.shape[0]) for k, v in arrays.items()}
        write_json(
            tmp / "meta.json", {**meta, "format": FORMAT_VERSION, "key": key, "lengths": lengths}
        )
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp)  # a concurrent writer won; its entry is equivalent
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load(cache_dir: str | Path, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """Return ``(arrays, meta)``, or None on a miss. Raises CorruptEntry on a bad entry."""
    d = entry_dir(cache_dir, key)
    if not d.exists():
        return None
    try:
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            raise CorruptEntry("format version or key does not match")
        with np.load(d / "arrays.npz", allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}  # reading whole members checks CRC
    except CorruptEntry:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CorruptEntry(f"{type(e).__name__}: {e}") from e
    lengths = meta.get("lengths", {})
    if set(lengths) != set(arrays) or any(arrays[k].shape[0] != n for k, n in lengths.items()):
        raise CorruptEntry("arrays do not match the lengths recorded in meta.json")
    return arrays, meta


@contextmanager
def locked(cache_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder (the folder itself is locked, so no lock
    file is left behind); without ``fcntl`` (Windows) it does nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    fd = os.open(Path(cache_dir).expanduser(), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_leftovers(cache_dir: str | Path) -> list[Path]:
    """Remove what killed writers left in ``cache_dir``: half-written entries
    (``.tmp-lightrec-*``; call this holding :func:`locked`, so no entry is being written)
    and stale temporary files of the fingerprint memo."""
    root = Path(cache_dir).expanduser()
    removed = remove_stale_temps(root)
    for tmp in root.glob(f".tmp-{PREFIX}*"):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d leftovers of killed writes from %s", len(removed), root)
    return removed


def remove(cache_dir: str | Path, key: str) -> None:
    shutil.rmtree(entry_dir(cache_dir, key), ignore_errors=True)


def clean(cache_dir: str | Path) -> list[Path]:
    """Remove this toolkit's entries (and only those) from ``cache_dir``; return them."""
    root = Path(cache_dir).expanduser()
    removed = []
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.name.startswith((PREFIX, f".tmp-{PREFIX}")):
                if p.is_symlink():  # not ours to follow: what it points to may be anything
                    print(f"skipped {p}: a symbolic link, not a cache entry", file=sys.stderr)
                    continue
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed
