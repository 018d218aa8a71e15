"""Train BERT4Rec: `python train_bert4rec.py [--config-name X] [key=value ...]`.

An alias of `python -m lightrec train bert4rec_v2 [key=value ...]` (lightrec.cli)."""

import sys

from lightrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], default_config="bert4rec_v2"))
