#!/usr/bin/env bash
# Every load scenario against one local server: chat at concurrency 1/8/32/64, the
# /generate + judge mix, and (with SRLM_ADMIN_TOKEN set) hot-swap under load. Results in
# load-tests/results/. The fault scenarios start their own server: load-tests/faults.sh.
#   SRLM_ADMIN_TOKEN=... load-tests/run.sh [URL]
set -euo pipefail
cd "$(dirname "$0")/.."
URL="${1:-http://127.0.0.1:8080}"
CONCURRENCY="${CONCURRENCY:-1,8,32,64}" REQUESTS="${REQUESTS:-64}" load-tests/chat.sh "$URL" run
load-tests/generate.sh "$URL"
if [ -n "${SRLM_ADMIN_TOKEN:-}" ]; then load-tests/swap.sh "$URL"; else echo "SRLM_ADMIN_TOKEN unset: hot-swap scenario skipped"; fi
