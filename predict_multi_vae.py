"""Predict MultiVAE: `python predict_multi_vae.py [--config-name X] [key=value ...]`.

An alias of `python -m lightrec predict multi_vae_v2 [key=value ...]` (lightrec.cli)."""

import sys

from lightrec.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]], default_config="multi_vae_v2"))
