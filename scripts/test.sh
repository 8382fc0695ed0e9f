#!/usr/bin/env bash
# The whole test suite: unit and integration tests, plus strict nbval on the notebooks in the
# smoke preset (the cells stored with outputs, marked NBVAL_CHECK_OUTPUT, are compared). Extra
# args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install_chromium.sh ||
  echo "[test] Chromium could not be installed: the book's browser test will be skipped (in CI it fails)"
export AMB_PRESET=smoke MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# One thread per process: the test models are tiny, and two OpenMP threads on two shared
# cores mostly wait for each other (measured: several times slower under load).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Waiting OpenMP threads sleep rather than spin (read when torch loads; ambcore.threads).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# Runs made by the tests and the notebooks go to a fresh folder, never into ./runs.
AMB_RUNS=$(mktemp -d "${TMPDIR:-/tmp}/ambcore-test-runs.XXXXXX")
export AMB_RUNS
# Results files the chapters write under nbval go there too, never into ./results.
export AMB_RESULTS=$AMB_RUNS/results
# Strict nbval: every cell stored with outputs (those marked NBVAL_CHECK_OUTPUT) is compared;
# cells stored unrun are executed without comparison (tests/test_nbval_mode.py). Paths, times
# and durations are masked by tests/nbval_sanitize.cfg.
exec .venv/bin/python -m pytest tests notebooks --nbval \
  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider "$@"
