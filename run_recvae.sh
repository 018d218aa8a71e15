#!/usr/bin/env bash
# Train and/or predict RecVAE. --help for modes and arguments.
set -uo pipefail
DEFAULT_CONFIG=recvae
# shellcheck source=scripts/run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run_common.sh"
lightrec_run "$@"
