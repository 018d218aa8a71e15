#!/usr/bin/env bash
# MultiVAE: ./run_multi_vae.sh [mode] [config] [overrides...] (mode both, config multi_vae_v2 unless
# given). An alias of ./run.sh with that default config; --help lists the modes.
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" --default-config multi_vae_v2 "${@:-both}"
