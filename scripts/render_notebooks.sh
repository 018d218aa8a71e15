#!/usr/bin/env bash
# Execute the notebooks on real runs and write them, with outputs, to docs/notebooks/*.html.
#
#   scripts/render_notebooks.sh [LOG_ROOT]     (default saved/hydra_logs)
#
# Each notebook shows the latest finished run of its model under LOG_ROOT: train them first
# (./run_multi_vae.sh; ./run_bert4rec.sh, or benchmarks/run_report_models.sh for
# saved/report_runs). Needs the dev extra (nbconvert, ipykernel, scikit-learn).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIGHTREC_LOG_ROOT="${1:-saved/hydra_logs}"
mkdir -p docs/notebooks
for nb in notebooks/visualize_multi_vae.ipynb notebooks/visualize_bert4rec.ipynb \
          notebooks/matrix_factorization_basics.ipynb; do
    .venv/bin/jupyter nbconvert --to html --execute --ExecutePreprocessor.timeout=600 \
        --output-dir docs/notebooks "$nb"
done
