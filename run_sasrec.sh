#!/usr/bin/env bash
# Train and/or predict SASRec. --help for modes and arguments.
set -uo pipefail
DEFAULT_CONFIG=sasrec
# shellcheck source=scripts/run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run_common.sh"
lightrec_run "$@"
