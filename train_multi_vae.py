"""Train MultiVAE: `python train_multi_vae.py [--config-name X] [key=value ...]`.

An alias of `python -m lightrec train multi_vae_v2 [key=value ...]` (lightrec.cli)."""

import sys

from lightrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], default_config="multi_vae_v2"))
