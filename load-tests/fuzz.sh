#!/usr/bin/env bash
# Schema-driven fuzzing of every route in openapi/openapi.json (schemathesis, valid and
# invalid inputs) against a server of this script's own: the default model, its own
# database, tight generation limits so each request is cheap. Fails on any 5xx, a
# response slower than 60 s (a hang), or a panic in the server's log. Admin routes are
# fuzzed with the admin token, except self-instruction (each call generates prompts).
#   load-tests/fuzz.sh [MAX_EXAMPLES]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --quiet --bin srlm
BIN="$CARGO_TARGET_DIR/release/srlm"
VENV="$HOME/.cache/srlm-fuzz-venv"
[ -x "$VENV/bin/schemathesis" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'; }
scripts/postgres.sh srlm_fuzz >/dev/null
PORT=18094 TOKEN=fuzz-admin
BASE="http://127.0.0.1:$PORT"
LOG=$(mktemp /tmp/srlm-fuzz.XXXXXX.log)
"$BIN" serve --port "$PORT" --database-url "postgres://postgres@127.0.0.1:5432/srlm_fuzz" --admin-token "$TOKEN" \
    --max-tokens 16 --default-max-tokens 16 --max-n 2 --max-judge-samples 2 --request-timeout-secs 60 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -fs "$BASE/ready" >/dev/null 2>&1 && break; sleep 0.5; done
mkdir -p load-tests/results
status=0
"$VENV/bin/schemathesis" run openapi/openapi.json --url "$BASE" \
    --checks not_a_server_error --max-response-time 60 --request-timeout 90 \
    --max-examples "${1:-25}" --workers 2 --exclude-path /admin/self-instruct \
    -H "Authorization: Bearer $TOKEN" --generation-deterministic \
    --report junit --report-junit-path load-tests/results/fuzz.junit.xml || status=$?
if grep -n "panicked" "$LOG"; then echo "the server panicked (log: $LOG)"; status=1; fi
kill -0 "$SERVER" 2>/dev/null || { echo "the server died (log: $LOG)"; status=1; }
echo "fuzz exit status $status; server log $LOG"
exit $status
