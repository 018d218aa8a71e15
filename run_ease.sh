#!/usr/bin/env bash
# Fit and/or predict EASE (or: pop). --help for modes and arguments.
set -uo pipefail
DEFAULT_CONFIG=ease
# shellcheck source=scripts/run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run_common.sh"
lightrec_run "$@"
