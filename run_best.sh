#!/usr/bin/env bash
# The best submission the toolkit makes (docs/RESULTS.md): trains each member of the
# recipe (best.members in configs/recipe/, selected on validation; a member is refit on
# training + validation rows unless the recipe says refit=false for it) and combines them
# (best.combine: a blend with weights chosen on validation, or the re-ranker).
#
#   ./run_best.sh [hydra overrides...]          e.g. ./run_best.sh data.path=my_log.csv
#
# The submission's path is the last line printed: saved/blends/ for a blend, saved/reranks/
# for the re-ranker; the run folders stay under paths.log_root (default saved/hydra_logs).
# An alias of ./run.sh best.
case "${1:-}" in -h|--help|help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
esac
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" best "$@"
