#!/usr/bin/env bash
# The GPU path in under 8 minutes on one GPU; prints a PASS/FAIL table, exits non-zero on failure.
#   scripts/gpu_check.sh               # on a GPU
#   scripts/gpu_check.sh --cpu-smoke   # on CPU with a tiny model (GPU-only checks skip)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
exec timeout 480 "$PY" scripts/gpu_check.py "$@"
