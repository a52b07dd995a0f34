#!/usr/bin/env bash
# DPO training throughput and peak memory on the default model (weights dequantized to
# f32), pairs of 2 × 256 tokens (128 prompt + 128 answer each), effective batch 16:
# full fine-tuning, LoRA (rank 16), and frozen embeddings + bottom half of the layers.
# Each mode runs in its own process so peak memory is its own.
# Writes load-tests/results/train-<mode>.json.
#   load-tests/train.sh [MODES]     e.g. load-tests/train.sh full
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/fetch-model.sh
mkdir -p load-tests/results
for mode in ${1:-full lora freeze}; do
    cargo run --release --quiet -- bench train --mode "$mode" --pairs "${PAIRS:-16}" \
        --batch-size 16 --micro-batch "${MICRO_BATCH:-1}" --out "load-tests/results/train-$mode.json"
done
