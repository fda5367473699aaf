#!/usr/bin/env bash
# Runs atml's GPU check (scripts/gpu_check.py) on a GPU machine: no download, under 6 minutes.
# Usage: scripts/gpu_check.sh [--compile off|default|...] [--json benchmarks/gpu-check-CARD.json]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" -c "import atml" 2>/dev/null || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 360 "$PY" scripts/gpu_check.py "$@"
