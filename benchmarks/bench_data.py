"""Data preparation speed: ``python benchmarks/bench_data.py --rows 5000000``.

Prints one JSON line:
- ``build_s``: RecSysDataModule prepare + setup with an empty cache (read, clean, encode,
  split, hash the file, write the cache entry, build the CSR views);
- ``reload_s``: the same in a new data module, served from the cache;
- ``read_csv_s``: a bare ``pandas.read_csv`` of the same file, the in-run reference
  (``build_over_read_csv`` is the ratio, steadier than seconds on a noisy machine).
The synthetic log is kept in ``--work`` between runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pandas as pd

from common import shipped_config
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.training.fit import build_datamodule
from synth import write_log


def make_dm(csv: Path, cache_dir: Path) -> RecSysDataModule:
    cfg = shipped_config(
        "multi_vae_v2",
        [f"data.path={csv}", "data.holdout=valid_and_test", f"data_cache.cache_dir={cache_dir}"],
    )
    return build_datamodule(cfg)


def timed_setup(csv: Path, cache_dir: Path) -> tuple[float, RecSysDataModule]:
    t = time.perf_counter()
    dm = make_dm(csv, cache_dir)
    dm.prepare_data()
    dm.setup("fit")
    return time.perf_counter() - t, dm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--work", default="benchmarks/.work")
    a = ap.parse_args()
    work = Path(a.work)
    csv = work / f"synth_{a.rows}.csv"
    if not csv.exists():
        write_log(csv, a.rows)
    cache_dir = work / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)

    t = time.perf_counter()
    pd.read_csv(csv)
    read_s = time.perf_counter() - t
    build_s, dm = timed_setup(csv, cache_dir)
    reload_s, again = timed_setup(csv, cache_dir)
    assert again.from_cache and not dm.from_cache
    print(
        json.dumps(
            {
                "rows": a.rows,
                "users": dm.num_users,
                "items": dm.num_items,
                "build_s": round(build_s, 3),
                "reload_s": round(reload_s, 3),
                "read_csv_s": round(read_s, 3),
                "build_over_read_csv": round(build_s / read_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
