#!/usr/bin/env bash
# Hyper-parameter searches (lightrec.search, Optuna's TPE) of EASE's lambda, MultiVAE,
# RecVAE and SASRec, one after the other (about 2 hours on 2 CPU cores). The shipped configs
# came from an earlier sweeper that drew differently: these searches reproduce the method,
# not those exact values (each config says where its values come from).
#
#   benchmarks/run_searches.sh [CONFIG ...] [key=value ...]
#       (default configs: ease multi_vae_v2 recvae sasrec; the overrides go to every search,
#        e.g. search.pruner=none, search.workers=2, resume=true)
#
# Each CONFIG is searched with configs/hparams_search/<its model>.yaml (the config's name
# without its _vN version: multi_vae_v2 -> multi_vae).
# They run on the hidden-last-item protocol's *training* file (MovieLens-100K without each
# user's last interaction, benchmarks/.work/protocol/train.csv, the file that
# benchmarks/eval_protocol.py trains on), so validation is each user's second-to-last item
# and the hidden items that docs/RESULTS.md scores are never seen by any selection.
# Results: saved/search/<config>/<date>/<time>-search/best.yaml (the best trial, its value on
# 3 fresh seeds, the command that trains it); a killed search continues with the same
# command plus resume=true.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
train_csv=$("$py" benchmarks/eval_protocol.py --files-only)
configs=()
overrides=()
for arg in "$@"; do
    if [[ $arg == *=* ]]; then overrides+=("$arg"); else configs+=("$arg"); fi
done
[[ ${#configs[@]} -gt 0 ]] || configs=(ease multi_vae_v2 recvae sasrec)
for c in "${configs[@]}"; do
    "$py" -m lightrec train "$c" -m "hparams_search=${c%_v[0-9]*}" "data.path=$train_csv" \
        paths.log_root=saved/search "${overrides[@]}"
done
