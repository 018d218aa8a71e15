"""Predict EASE (or Popularity: --config-name pop): `python predict_ease.py [key=value ...]`.

An alias of `python -m lightrec predict ease [key=value ...]` (lightrec.cli)."""

import sys

from lightrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]], default_config="ease"))
