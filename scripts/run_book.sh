#!/usr/bin/env bash
# The main job: install, execute every chapter with papermill, build the book.
# Usage: bash scripts/run_book.sh [PRESET] [extra args for `python -m ambcore book`]
# PRESET defaults to $AMB_PRESET or "embedded" (synthetic data + bundled all-MiniLM-L6-v2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
preset=${1:-${AMB_PRESET:-embedded}}
shift || true
exec .venv/bin/python -m ambcore book --preset "$preset" "$@"
