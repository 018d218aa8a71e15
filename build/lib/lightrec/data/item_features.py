"""Item side information (genres, directors, writers, release years, titles), read and encoded
with a run's item map, for the stages that use it (the re-ranker, the availability filter).

Two layouts (``data.item_features``):

- a **folder** of tab-separated ``<field>.tsv`` files, each with a header of two columns,
  ``item`` and the value's (any name: the MovieLens competition ships ``genres.tsv`` as
  ``item<TAB>genre``), and one row per (item, value); the file's stem names the field, and
  a multi-valued field (genres, directors) has several rows per item. Quotes are plain
  characters (a title may begin with one);
- one **CSV** file with an ``item`` column and one column per field, several values of a
  cell separated by ``|`` (the built-in MovieLens-100K's ``items.csv``:
  ``item,title,year,genres``).

A field whose values are numbers (``year``; at least 95% of them, the rest such as
``unknown`` count as missing) is **numeric**: one float per item, NaN where unknown, several
values of an item averaged. Any other field is **categorical**
(items x values, multi-hot), except a text-like one whose values are nearly all distinct
(``title``: more distinct values than half its items), which is kept for display only.
Items of the file that the run's item map lacks are ignored (counted); items without a value
have none (no row, NaN).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lightrec.data.interactions import index_of
from lightrec.errors import LightrecError

log = logging.getLogger(__name__)

MULTI_SEP = "|"  # several values of a CSV cell
NUMERIC_SHARE = 0.95  # a field this share of whose values are numbers is numeric
YEAR_FIELDS = ("year", "years")  # the release year: items.csv's column, the competition's file


@dataclass
class ItemFeatures:
    """Side features in item-index order (row r is ``item_ids[r]``)."""

    categorical: dict[str, sp.csr_matrix] = field(default_factory=dict)  # items x values, 0/1
    vocab: dict[str, list[str]] = field(default_factory=dict)  # the values of each field
    numeric: dict[str, np.ndarray] = field(default_factory=dict)  # one float per item
    text: list[str] = field(default_factory=list)  # fields kept for display only
    unknown_items: int = 0  # rows naming items the run's item map lacks

    @property
    def empty(self) -> bool:
        return not self.categorical and not self.numeric

    def release_year(self) -> np.ndarray | None:
        """Each item's release year (NaN where unknown): the numeric field of
        ``YEAR_FIELDS``, or None when there is none."""
        for name in YEAR_FIELDS:
            if name in self.numeric:
                return self.numeric[name]
        return None


def time_to_year(times: np.ndarray) -> np.ndarray:
    """Calendar years (float) of times as the data files hold them: Unix seconds, or
    milliseconds, or dates (read as nanoseconds); NaN where the clock is none of these (file
    order, or a counter).

    >>> time_to_year(np.array([881250949, 1_600_000_000_000, 10])).tolist()
    [1997.0, 2020.0, nan]
    """
    t = np.asarray(times, dtype=np.float64)
    out = np.full(len(t), np.nan)
    for low, high, per_second in ((3e8, 1e10, 1), (3e11, 1e13, 1e3), (3e17, 1e19, 1e9)):
        hit = (t >= low) & (t < high)
        if hit.any():
            stamps = pd.to_datetime(t[hit] / per_second, unit="s")
            out[hit] = stamps.year.to_numpy(float)
    return out


def feature_source(setting: str | None, data_path: Path) -> Path | None:
    """The side-information path a ``data.item_features`` setting names: ``auto`` is an
    ``items.csv`` beside the data file when there is one (the built-in MovieLens-100K has
    it), None or ``none`` is no side information, anything else a file or folder that must
    exist."""
    if setting is None or str(setting).lower() == "none":
        return None
    if str(setting) == "auto":
        beside = data_path.parent / "items.csv"
        return beside if beside.is_file() else None
    path = Path(setting).expanduser()
    if not path.exists():
        raise LightrecError(f"data.item_features: {path} does not exist (a folder or a CSV file)")
    return path


def read_item_features(path: Path, item_ids: list) -> ItemFeatures:
    """Read ``path`` (a folder of ``<field>.tsv`` or one CSV) for the items ``item_ids``."""
    pairs = _read_folder(path) if path.is_dir() else _read_csv(path)
    if not pairs:
        raise LightrecError(f"data.item_features: {path} holds no field (expected item features)")
    out = ItemFeatures()
    unknown: set = set()
    for name, frame in pairs.items():
        values = frame["value"].astype(str).str.strip()
        given = values.to_numpy() != ""
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(float)
        numeric = given.any() and (~np.isnan(numbers[given])).mean() >= NUMERIC_SHARE
        items = frame["item"].astype(str).to_numpy(dtype=object)  # ids are text
        rows = index_of(item_ids, items)
        unknown |= set(items[rows < 0])
        keep = given & (rows >= 0)  # the field's type is the whole file's; rows are the map's
        rows, values, numbers = rows[keep], values[keep], numbers[keep]
        is_number = ~np.isnan(numbers)
        if numeric:
            if not is_number.all():
                log.info(
                    "%s: %s: %d values that are not numbers are unknown",
                    path,
                    name,
                    (~is_number).sum(),
                )
            r, v = rows[is_number], numbers[is_number]
            total = np.bincount(r, weights=v, minlength=len(item_ids))
            count = np.bincount(r, minlength=len(item_ids))
            out.numeric[name] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            continue
        codes, vocab = pd.factorize(values, sort=True)
        items_with = len(np.unique(rows))
        if len(vocab) > 0.5 * max(items_with, 1) and items_with > 20:
            out.text.append(name)  # a title: nearly one value per item, nothing to share
            continue
        ones = np.ones(len(rows), dtype=np.float32)
        m = sp.csr_matrix((ones, (rows, codes)), shape=(len(item_ids), len(vocab)))
        m.sum_duplicates()
        m.data[:] = 1.0
        out.categorical[name] = m
        out.vocab[name] = [str(v) for v in vocab]
    out.unknown_items = len(unknown)
    if unknown:
        log.info("%s: ignored %d items the data file does not have", path, len(unknown))
    return out


def _read_folder(folder: Path) -> dict[str, pd.DataFrame]:
    """``{field: frame(item, value)}`` from every ``<field>.tsv`` of ``folder``."""
    pairs = {}
    for tsv in sorted(folder.glob("*.tsv")):
        try:
            frame = pd.read_csv(
                tsv, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE
            )
        except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
            raise LightrecError(f"item features file {tsv} cannot be read ({e})") from None
        except pd.errors.EmptyDataError:
            raise LightrecError(f"item features file {tsv} is empty") from None
        name = tsv.stem
        header = [str(c) for c in frame.columns]
        if len(header) != 2 or header[0] != "item":
            raise LightrecError(
                f"item features file {tsv} must have a header of two columns, item and its "
                f"value (item<TAB>{name}; it has: {', '.join(header)})"
            )
        pairs[name] = frame.set_axis(["item", "value"], axis=1)
    return pairs


def _read_csv(path: Path) -> dict[str, pd.DataFrame]:
    """``{field: frame(item, value)}`` from a CSV with an ``item`` column; ``|`` splits a
    cell into several values."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LightrecError(f"item features file {path} is empty") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as e:
        raise LightrecError(f"item features file {path} cannot be read as a CSV ({e})") from None
    if "item" not in frame.columns:
        have = ", ".join(map(str, frame.columns))
        raise LightrecError(f"item features file {path} has no column 'item' (it has: {have})")
    pairs = {}
    for name in frame.columns:
        if name == "item":
            continue
        cells = frame[["item", name]].rename(columns={name: "value"})
        split = cells["value"].str.split(MULTI_SEP, regex=False)
        pairs[str(name)] = cells.assign(value=split).explode("value", ignore_index=True)
    return pairs
