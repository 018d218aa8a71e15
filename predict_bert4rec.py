"""Predict BERT4Rec: `python predict_bert4rec.py [--config-name X] [key=value ...]`.

An alias of `python -m lightrec predict bert4rec_v2 [key=value ...]` (lightrec.cli)."""

import sys

from lightrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]], default_config="bert4rec_v2"))
