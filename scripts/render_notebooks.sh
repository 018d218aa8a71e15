#!/usr/bin/env bash
# Execute the notebooks on real runs and write them, with outputs, to docs/notebooks/*.html.
#
#   scripts/render_notebooks.sh [LOG_ROOT]     (default: the configs' paths.log_root)
#
# Each notebook shows the latest finished run of its model under LOG_ROOT: train them first
# (./run.sh both multi_vae_v2; ./run.sh both bert4rec_v2, or benchmarks/run_report_models.sh for
# saved/report_runs). Needs the dev extra (nbconvert, ipykernel, scikit-learn).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${1:-}" ]; then export LIGHTREC_LOG_ROOT="$1"; fi
mkdir -p docs/notebooks
for nb in notebooks/visualize_multi_vae.ipynb notebooks/visualize_bert4rec.ipynb \
          notebooks/matrix_factorization_basics.ipynb; do
    .venv/bin/jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=600 \
        --output-dir docs/notebooks "$nb"
done
