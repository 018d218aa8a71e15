#!/usr/bin/env bash
# Every model on one protocol, then the report: the runs behind docs/RESULTS.md's table.
#
#   benchmarks/run_report_models.sh [LOG_ROOT [OUT_MD [OUT_PNG]]]
#   (defaults saved/report_runs, docs/RESULTS.md, docs/results.png)
#
# Protocol: built-in MovieLens-100K, leave-one-out by time, valid_and_test (validation =
# each user's second-to-last item, test = the last). Model selection (early stopping, best
# checkpoint, EASE's lambda) sees validation only; test is computed once per run from the
# selected checkpoint with the validation item added to the history.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-saved/report_runs}"
py=.venv/bin/python
common=(data.holdout=valid_and_test "paths.log_root=$root" progress=none)

"$py" -m lightrec train pop "${common[@]}"
"$py" -m lightrec train ease -m "${common[@]}" model.lam=10,50,100,200,400,800
for config in multi_vae multi_vae_v2 multi_vae_v3 recvae bert4rec_v2 sasrec; do
    "$py" -m lightrec train "$config" "${common[@]}"
done
"$py" -m lightrec report --log-root "$root" --out "${2:-docs/RESULTS.md}" --png "${3:-docs/results.png}"
