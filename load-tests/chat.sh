#!/usr/bin/env bash
# Chat load against a running server (default http://127.0.0.1:8080): streamed requests
# at concurrency 1, 8 and 32; prints tokens/s, requests/s, p50/p95/p99 and writes
# load-tests/results/chat-<label>.json. Loopback only; bounded in requests and time.
#   load-tests/chat.sh [URL] [LABEL]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
URL="${1:-http://127.0.0.1:8080}"
LABEL="${2:-default}"
mkdir -p load-tests/results
cargo run --release --quiet -- bench chat --url "$URL" --concurrency "${CONCURRENCY:-1,8,32}" \
    --requests "${REQUESTS:-32}" --max-tokens "${MAX_TOKENS:-128}" --label "$LABEL" \
    --out "load-tests/results/chat-$LABEL.json"
