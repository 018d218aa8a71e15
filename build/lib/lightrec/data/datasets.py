"""Built-in datasets, prepared once as a ``user,item,time`` CSV under the data folder.

MovieLens-100K (943 users, 1,682 items, 100,000 ratings; https://grouplens.org/datasets/movielens/)
is taken from the first source that works:

1. files placed by hand: ``<data_dir>/ml-100k.zip`` or ``<data_dir>/ml-100k/u.data`` (+ ``u.item``);
2. the GroupLens zip, downloaded with a short timeout;
3. the ``recbole==1.2.1`` wheel from PyPI, which ships the same data as ``ml-100k.inter``
   (fetched with ``pip download --no-deps``; nothing is installed).

The result is verified (row, user and item counts) and written atomically:
``<data_dir>/ml-100k/interactions.csv`` (``user,item,time,rating``; every rating counts as
an interaction, and the implicit models read only the first three columns) and
``<data_dir>/ml-100k/items.csv`` (``item,title,year,genres``).
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import IO

import pandas as pd

from lightrec.errors import LightrecError
from lightrec.utils.io import atomic_write

log = logging.getLogger(__name__)

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
RECBOLE_SPEC = "recbole==1.2.1"
ML100K_SHAPE = {"rows": 100_000, "users": 943, "items": 1_682}
# the genre flags of u.item, in file order
GENRES = (
    "unknown|Action|Adventure|Animation|Children's|Comedy|Crime|Documentary|Drama|Fantasy|"
    "Film-Noir|Horror|Musical|Mystery|Romance|Sci-Fi|Thriller|War|Western"
).split("|")

Frames = tuple[pd.DataFrame, pd.DataFrame]  # (interactions user,item,time,rating ; items)


def data_file(path: str | Path | None, data_dir: str | Path) -> Path:
    """The interaction CSV a config names: ``data.path``, or, when it is null, the
    built-in MovieLens-100K prepared under ``data.data_dir``."""
    if path is None:
        return movielens_100k(data_dir)
    return Path(path).expanduser()


def item_table(data_path: Path, item_ids: list) -> pd.DataFrame | None:
    """Item metadata (``title``, and ``genres`` where known) in item-index order, from an
    ``items.csv`` with an ``item`` and a ``title`` column next to the data file, as the
    built-in MovieLens-100K has; None when there is no such file."""
    items_csv = data_path.parent / "items.csv"
    if not items_csv.is_file():
        return None
    try:
        items = pd.read_csv(items_csv)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if not {"item", "title"} <= set(items.columns):
        return None
    table = items.drop_duplicates("item").set_index("item").reindex(pd.Index(item_ids))
    return table.reset_index(drop=True)


def movielens_100k(data_dir: str | Path, download_timeout: float = 10.0) -> Path:
    """Return the path of MovieLens-100K's ``interactions.csv``, preparing it if missing."""
    out_dir = Path(data_dir).expanduser() / "ml-100k"
    inter_csv, items_csv = out_dir / "interactions.csv", out_dir / "items.csv"
    stale = inter_csv.exists() and items_csv.exists()
    if stale:
        with inter_csv.open() as f:
            if "rating" in f.readline().strip().split(","):
                return inter_csv
        # prepared by an older lightrec, without the rating column: prepare again if a
        # source is reachable, else keep using it (the implicit models do not need ratings)

    sources: list[tuple[str, Callable[[], Frames]]] = [
        ("files placed by hand", lambda: _from_local(Path(data_dir).expanduser())),
        ("GroupLens download", lambda: _from_grouplens(download_timeout)),
        (f"PyPI wheel {RECBOLE_SPEC}", _from_recbole_wheel),
    ]
    failures = []
    for name, load in sources:
        try:
            inter, items = load()
            _verify(inter, items)
        except Exception as e:  # noqa: BLE001 - every source may fail in its own way
            failures.append(f"{name}: {e}")
            log.info("MovieLens-100K source %s failed: %s", name, e)
            continue
        for path, frame in ((items_csv, items), (inter_csv, inter)):
            atomic_write(path, partial(_write_csv, frame))
        log.info("MovieLens-100K prepared from %s into %s", name, out_dir)
        return inter_csv
    if stale:
        log.warning(
            "%s has no rating column and no source could add it (%s); using it as it is",
            inter_csv,
            "; ".join(failures),
        )
        return inter_csv
    raise LightrecError(
        "could not prepare MovieLens-100K (" + "; ".join(failures) + "): download "
        f"{ML100K_URL} by hand and put it at {Path(data_dir) / 'ml-100k.zip'}, then run again"
    )


def _write_csv(frame: pd.DataFrame, f: IO[str]) -> None:
    frame.to_csv(f, index=False)


def _verify(inter: pd.DataFrame, items: pd.DataFrame) -> None:
    got = {"rows": len(inter), "users": inter["user"].nunique(), "items": inter["item"].nunique()}
    if got != ML100K_SHAPE:
        raise ValueError(f"unexpected shape {got}, expected {ML100K_SHAPE}")
    if len(items) != ML100K_SHAPE["items"]:
        raise ValueError(f"{len(items)} item titles, expected {ML100K_SHAPE['items']}")


def _from_local(data_dir: Path) -> Frames:
    zip_path, raw = data_dir / "ml-100k.zip", data_dir / "ml-100k"
    if zip_path.exists():
        return _parse_grouplens_zip(zip_path.read_bytes())
    if (raw / "u.data").exists() and (raw / "u.item").exists():
        return _parse_grouplens((raw / "u.data").read_bytes(), (raw / "u.item").read_bytes())
    raise FileNotFoundError(f"neither {zip_path} nor {raw / 'u.data'} exists")


def _from_grouplens(timeout: float) -> Frames:
    with urllib.request.urlopen(ML100K_URL, timeout=timeout) as r:  # noqa: S310 - fixed https URL
        return _parse_grouplens_zip(r.read())


def _parse_grouplens_zip(blob: bytes) -> Frames:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return _parse_grouplens(z.read("ml-100k/u.data"), z.read("ml-100k/u.item"))


def _parse_grouplens(u_data: bytes, u_item: bytes) -> Frames:
    inter = pd.read_csv(
        io.BytesIO(u_data), sep="\t", header=None, names=["user", "item", "rating", "time"]
    )[["user", "item", "time", "rating"]]
    raw = pd.read_csv(
        io.BytesIO(u_item),
        sep="|",
        header=None,
        encoding="latin-1",
        names=["item", "title", "release", "video", "url", *GENRES],
    )
    parts = raw["title"].str.extract(r"^(?P<title>.*?)(?: \((?P<year>\d{4})\))?\s*$")
    flags = raw[GENRES].to_numpy().astype(bool)
    genres = ["|".join(g for g, on in zip(GENRES, row, strict=True) if on) for row in flags]
    items = pd.DataFrame(
        {"item": raw["item"], "title": parts["title"], "year": parts["year"], "genres": genres}
    )
    return inter, items


def _from_recbole_wheel() -> Frames:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
            tmp,
            RECBOLE_SPEC,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download failed: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            base = "recbole/dataset_example/ml-100k/ml-100k"
            inter = _read_atomic_file(z.read(f"{base}.inter"))
            items = _read_atomic_file(z.read(f"{base}.item"))
    inter = inter.rename(columns={"user_id": "user", "item_id": "item", "timestamp": "time"})
    inter = inter[["user", "item", "time", "rating"]].astype("float64").astype("int64")
    items = pd.DataFrame(
        {
            "item": items["item_id"].astype("int64"),
            "title": items["movie_title"],
            "year": items["release_year"],
            "genres": items["class"].fillna("").str.split().str.join("|"),
        }
    )
    return inter, items


def _read_atomic_file(blob: bytes) -> pd.DataFrame:
    """Read RecBole's tab-separated 'atomic file' whose header is ``name:type``."""
    df = pd.read_csv(io.BytesIO(blob), sep="\t", dtype=str, keep_default_na=False)
    df.columns = [re.sub(r":.*$", "", c) for c in df.columns]
    return df
