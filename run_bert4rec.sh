#!/usr/bin/env bash
# BERT4Rec: ./run_bert4rec.sh [mode] [config] [overrides...] (mode both, config bert4rec_v2 unless
# given). An alias of ./run.sh with that default config; --help lists the modes.
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" --default-config bert4rec_v2 "${@:-both}"
