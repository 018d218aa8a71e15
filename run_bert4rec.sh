#!/usr/bin/env bash
# Train and/or predict BERT4Rec. --help for modes and arguments.
set -uo pipefail
DEFAULT_CONFIG=bert4rec_v2
# shellcheck source=scripts/run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run_common.sh"
lightrec_run "$@"
