#!/usr/bin/env bash
# The best submission the toolkit makes (docs/RESULTS.md): trains each model of the blend
# (selected on validation, then refit on training + validation rows) and blends them with
# weights chosen on their validation predictions. Overrides reach every training.
#
#   ./run_best.sh [hydra overrides...]          e.g. ./run_best.sh data.path=my_log.csv
#
# The submission's path is the last line printed; the run folders stay under
# paths.log_root (default saved/hydra_logs), the blend under saved/blends/. The members are
# the recipe's best.members (configs/recipe/). An alias of ./run.sh best.
case "${1:-}" in -h|--help|help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
esac
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" best "$@"
