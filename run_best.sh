#!/usr/bin/env bash
# The best submission the toolkit makes (docs/RESULTS.md): trains each model of the blend
# (selected on validation, then refit on training + validation rows) and blends them with
# weights chosen on their validation predictions. Overrides reach every training.
#
#   ./run_best.sh [hydra overrides...]          e.g. ./run_best.sh data.path=my_log.csv
#
# The submission's path is the last line printed; the run folders stay under
# paths.log_root (default saved/hydra_logs), the blend under saved/blends/.
set -uo pipefail
# shellcheck source=scripts/run_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/run_common.sh"
MEMBERS=(ease:ease sasrec:sasrec recvae:recvae)  # <config>:<entry script suffix>

case "${1:-}" in -h|--help|help)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
esac
lightrec_ensure_venv || exit 1
py="$LIGHTREC_VENV/bin/python"
log_root=saved/hydra_logs
for arg in "$@"; do
    case "$arg" in paths.log_root=*) log_root=${arg#paths.log_root=} ;; esac
done
configs=()
for member in "${MEMBERS[@]}"; do
    config=${member%%:*}
    "$py" "$LIGHTREC_ROOT/train_${member#*:}.py" --config-name "$config" "$@" || exit $?
    configs+=("$config")
done
"$py" -m lightrec.blend --latest "${configs[@]}" --log-root "$log_root" \
    --out "saved/blends/$(date +%Y-%m-%d/%H-%M-%S)/submission.csv"
