#!/usr/bin/env bash
# The one run script: ./run.sh MODE [CONFIG] [overrides...]  (./run.sh --help for the modes)
#   ./run.sh both sasrec data.path=my_log.csv      train, then predict
#   ./run.sh best                                  the best submission (a blend)
# Creates .venv and installs the project on first use (scripts/run_common.sh), then runs
# python -m lightrec with the same arguments.
set -uo pipefail
# shellcheck source=scripts/run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run_common.sh"
lightrec_ensure_venv || exit 1
exec "$LIGHTREC_VENV/bin/python" -m lightrec "$@"
