"""The S3-Rec authors' Amazon files (RUCAIBox/CIKM2020-S3Rec, ``data/<Name>.txt`` and
``data/<Name>_item2attributes.json``) as lightrec reads a log: ``log.csv`` (user,item,time,
time being each item's place in the user's sequence, which the file keeps in time order) and
a side-information folder (``attributes.tsv``, one row per item and attribute).

``python benchmarks/s3rec_data.py PATH/Beauty.txt [--attributes PATH/Beauty_item2attributes.json]
--out benchmarks/.work/beauty``

The files are public; get them with ``git clone https://github.com/RUCAIBox/CIKM2020-S3Rec``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def read_sequences(path: Path) -> pd.DataFrame:
    """``user item item ...`` lines as user,item,time rows."""
    rows = []
    for line in path.read_text().splitlines():
        user, *items = line.split()
        rows += [(user, item, place) for place, item in enumerate(items)]
    return pd.DataFrame(rows, columns=["user", "item", "time"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("sequences", type=Path)
    ap.add_argument("--attributes", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    log = read_sequences(a.sequences)
    log.to_csv(a.out / "log.csv", index=False)
    print(
        f"{a.out / 'log.csv'}: {len(log):,} rows, {log.user.nunique():,} users, "
        f"{log.item.nunique():,} items"
    )
    if a.attributes:
        side = a.out / "side"
        side.mkdir(exist_ok=True)
        pairs = json.loads(a.attributes.read_text())
        lines = [f"{item}\t{value}" for item, values in pairs.items() for value in values]
        (side / "attributes.tsv").write_text("item\tattribute\n" + "\n".join(lines) + "\n")
        print(f"{side / 'attributes.tsv'}: {len(lines):,} rows")


if __name__ == "__main__":
    main()
