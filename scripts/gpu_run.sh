#!/usr/bin/env bash
# One prepared GPU run (issue 28): the machine, `python -m medmm bench --json`, fp32/fp16/bf16 timings and the shipped
# recipe trained at the size and depth the GPU affords, every figure a JSON under one folder (docs/bench.md, "GPU run").
#   scripts/gpu_run.sh [--out DIR] [--budget-s 540] [--smoke]
# Python: $MEDMM_PYTHON, else .venv/bin/python, else a new .venv installed from requirements*.txt with pip (which
# needs a package index or a wheel cache: offline without a venv, it stops with status 3 and says so).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "gpu_run: $*" >&2; exit 3; }

PY="${MEDMM_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
  else
    echo "gpu_run: no .venv here: creating it and installing requirements.txt with pip" >&2
    command -v python3 >/dev/null || fail "no python3 on PATH to create .venv"
    python3 -m venv .venv || fail "python3 -m venv .venv failed"
    { .venv/bin/pip install -q --upgrade pip "setuptools>=70" wheel \
      && .venv/bin/pip install -q -r requirements.txt \
      && .venv/bin/pip install -q --no-deps -r requirements-nlp.txt \
      && .venv/bin/pip install -q --no-deps --no-build-isolation -e . ; } \
      || fail "pip could not install the requirements (no package index or wheel cache reachable?). Copy a working" \
              ".venv into $(pwd) or set MEDMM_PYTHON to a Python that has them; the half-made .venv is left as it is."
    PY=.venv/bin/python
  fi
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, timm, medmm" 2>/dev/null \
  || fail "$PY cannot import torch, timm and medmm: repair that environment or set MEDMM_PYTHON"
exec "$PY" scripts/gpu_run.py "$@"
