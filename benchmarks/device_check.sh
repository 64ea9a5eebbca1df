#!/usr/bin/env bash
# The GPU check of issue 18 in one go, for a machine with CUDA (minutes on one GPU):
# CUDA extraction (float16/bfloat16, writer overlapped), CKA, torch probes, SPES masks and
# TERA training against the CPU (benchmarks/device_check.py), then the tests marked `cuda`.
# Without CUDA it runs the CPU side only and says so.
#
#     bash benchmarks/device_check.sh [device_check.py options, e.g. --size tiny]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
status=0
"$PY" benchmarks/device_check.py "$@" || status=1
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "$PY" -m pytest -q -m cuda tests/unit || status=1
else
    echo "no CUDA: tests marked cuda skipped"
fi
exit $status
