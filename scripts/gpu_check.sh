#!/usr/bin/env bash
# Runs atml's GPU check (scripts/gpu_check.py) on a GPU machine: no download, about 2-3 minutes.
# Usage: scripts/gpu_check.sh [--compile] [--json out.json]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 290 "$PY" scripts/gpu_check.py "$@"
