#!/usr/bin/env bash
# The whole test suite: unit and integration tests, plus strict nbval on the notebooks in the
# smoke preset (the cells stored with outputs, marked NBVAL_CHECK_OUTPUT, are compared). Extra
# args go to both passes of pytest (below).
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
#
# Two passes. First every test not marked `alone`, on one pytest-xdist worker per usable core
# (AMB_TEST_WORKERS sets the count): the tests of one file go to one worker, the notebooks to
# one worker in chapter order (tests/conftest.py), each worker with its own runs folder. Then
# the tests marked `alone` (they measure time or signal process trees, the main job's included),
# with no other worker beside them.
workers=${AMB_TEST_WORKERS:-$(.venv/bin/python -c 'import os; print(len(os.sched_getaffinity(0)))')}
parallel=()
if [ "$workers" -gt 1 ]; then
  parallel=(-n "$workers" --dist loadfile --no-loadscope-reorder)
fi
status=0
.venv/bin/python -m pytest notebooks tests --nbval \
  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider \
  "${parallel[@]}" -m "not alone" "$@" || status=$?
alone=0
.venv/bin/python -m pytest tests -p no:cacheprovider -m alone "$@" || alone=$?
# Exit status 5 is "no test selected" (e.g. a -k that matches only one pass).
if [ "$status" -eq 5 ] && [ "$alone" -ne 5 ]; then status=0; fi
if [ "$alone" -ne 5 ] && [ "$alone" -ne 0 ] && [ "$status" -eq 0 ]; then status=$alone; fi
exit "$status"
