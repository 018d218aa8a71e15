#!/usr/bin/env bash
# Run the checks and the whole test suite: ruff (lint and format), mypy on src/, then pytest
# (fast tests and the marked MovieLens-100K end-to-end tests) on LIGHTREC_TEST_WORKERS
# processes (default 2; most tests wait on a subprocess's start-up, so two workers halve the
# suite's time on two cores).
# Creates .venv with the dev extra when missing. Extra arguments go to pytest (-n 0: one
# process).
set -uo pipefail
# shellcheck source=scripts/run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run_common.sh"
lightrec_ensure_venv dev || exit 1
cd "$LIGHTREC_ROOT" || exit 1
"$LIGHTREC_VENV/bin/python" -m ruff check . || exit 1
"$LIGHTREC_VENV/bin/python" -m ruff format --check . || exit 1
"$LIGHTREC_VENV/bin/python" -m mypy || exit 1
"$LIGHTREC_VENV/bin/python" -m pytest -n "${LIGHTREC_TEST_WORKERS:-2}" "$@"
