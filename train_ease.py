"""Train EASE (or Popularity: --config-name pop): `python train_ease.py [key=value ...]`.

An alias of `python -m lightrec train ease [key=value ...]` (lightrec.cli)."""

import sys

from lightrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], default_config="ease"))
