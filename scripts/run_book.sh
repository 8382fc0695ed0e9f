#!/usr/bin/env bash
# The main job: install, execute every chapter with papermill, build the book.
# Usage: bash scripts/run_book.sh [PRESET] [extra args for `python -m ambcore book`]
# PRESET defaults to $AMB_PRESET or "embedded" (synthetic data + bundled all-MiniLM-L6-v2).
# Ctrl-C or SIGTERM stops everything: the setup (pip included) runs in a process group of its
# own that the signal is passed on to; the book then replaces this shell (exec), so the signal
# reaches `python -m ambcore book` itself, which stops its kernels and their workers.
set -euo pipefail
cd "$(dirname "$0")/.."
set -m  # the next background job gets its own process group
bash scripts/setup.sh &
setup=$!
trap 'kill -TERM -- "-$setup" 2>/dev/null || true; wait "$setup" || true; exit 143' TERM
trap 'kill -INT -- "-$setup" 2>/dev/null || true; wait "$setup" || true; exit 130' INT
wait "$setup"
trap - TERM INT
set +m
export MPLBACKEND=Agg HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
# OpenMP threads sleep instead of spinning while they wait (read when torch loads): on a shared
# machine a spinning thread takes the core another program needs. AMB_THREADS (or --threads)
# sets the threads; the default is every core for a chapter, shared out among parallel runs.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
preset=${1:-${AMB_PRESET:-embedded}}
shift || true
exec .venv/bin/python -m ambcore book --preset "$preset" "$@"
