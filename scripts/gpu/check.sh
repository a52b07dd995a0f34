#!/usr/bin/env bash
# The one-shot GPU check (issue 18), run from the repository root on the GPU machine with
# the .gpu/ folder that scripts/gpu/pack.sh made carried along. Stages and results:
# scripts/gpu/check.py. Writes $OUT/results.json, summary.txt, check.log, stages.log,
# serve.log; prints a table last. Exit 0: every stage passed on a GPU; 1: a stage failed;
# 3: no GPU visible (without --dry-run it stops at once; with it, after the CPU run passed).
#   bash scripts/gpu/check.sh                 # on the GPU machine
#   bash scripts/gpu/check.sh --dry-run       # anywhere: tiny model, on the CPU without a GPU
# Options go to check.py (--budget-s, --stages, --skip, --engine, --srlm, --database-url).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${SRLM_GPU_PYTHON:-}"
if [ -z "$PY" ]; then
    # The GPU machine's python3 holds torch and transformers; here a dry run may use a venv.
    for c in /opt/torch/.venv/bin/python3 python3 "$HOME/.cache/gpu-dryrun-venv/bin/python"; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import torch, transformers' >/dev/null 2>&1; then
            PY=$c
            break
        fi
    done
fi
if [ -z "$PY" ]; then
    echo "check.sh: no Python with torch and transformers (set SRLM_GPU_PYTHON); the model stages will fail" >&2
    PY=python3
fi
export PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu/check.py --python "$PY" "$@"
