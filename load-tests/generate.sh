#!/usr/bin/env bash
# The self-rewarding workload at paper settings (N=4 candidates, K=3 judge samples,
# 256 new tokens) through /generate, per judging method, against a running server
# (default http://127.0.0.1:8080). Writes load-tests/results/generate.json.
#   load-tests/generate.sh [URL]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mkdir -p load-tests/results
cargo run --release --quiet -- bench generate --url "${1:-http://127.0.0.1:8080}" \
    --concurrency "${CONCURRENCY:-2}" --prompts "${PROMPTS:-4}" --out load-tests/results/generate.json
