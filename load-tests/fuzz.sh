#!/usr/bin/env bash
# Schema-driven fuzzing of every operation, admin routes included, against a server of
# this script's own (the default model, its own database, small generation limits so
# each request is cheap). The schema is the one the server publishes at /openapi.json,
# whose constraints are that server's limits. schemathesis (all phases, valid and
# invalid inputs) checks that nothing answers 5xx, that every status, content type and
# body is the one the spec declares, that schema-valid requests are accepted and
# schema-invalid ones refused; a response slower than 60 s (a hang) or a panic in the
# server's log fails too.
#   load-tests/fuzz.sh [MAX_EXAMPLES]         (default 25 per operation and phase)
# FUZZ_TIMEOUT (seconds, default 1800) bounds the whole run; FUZZ_PHASES picks phases
# (e.g. examples,coverage,fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --quiet --bin srlm
BIN="$CARGO_TARGET_DIR/release/srlm"
VENV="$HOME/.cache/srlm-fuzz-venv"
[ -x "$VENV/bin/schemathesis" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4.32,<5'; }
scripts/fetch-model.sh >/dev/null
scripts/postgres.sh srlm_fuzz >/dev/null
PORT=18094 TOKEN=fuzz-admin
BASE="http://127.0.0.1:$PORT"
WORK=$(mktemp -d /tmp/srlm-fuzz.XXXXXX)
LOG="$WORK/server.log"
"$BIN" serve --port "$PORT" --database-url "postgres://postgres@127.0.0.1:5432/srlm_fuzz" --admin-token "$TOKEN" \
    --max-tokens 8 --default-max-tokens 8 --max-n 2 --max-judge-samples 2 --max-self-instruct 1 \
    --request-timeout-secs 60 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do curl -fs "$BASE/ready" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fs "$BASE/ready" >/dev/null || { echo "the server did not become ready (log: $LOG)"; exit 1; }
# A request too large for the server (413) rejects invalid data as well as a 400 does.
cat >"$WORK/schemathesis.toml" <<'EOF'
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
EOF
mkdir -p load-tests/results
status=0
phases=()
[ -n "${FUZZ_PHASES:-}" ] && phases=(--phases "$FUZZ_PHASES")
timeout "${FUZZ_TIMEOUT:-1800}" "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$BASE/openapi.json" --url "$BASE" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,positive_data_acceptance,negative_data_rejection \
    --max-response-time 60 --request-timeout 90 --max-examples "${1:-25}" --workers 2 "${phases[@]}" \
    -H "Authorization: Bearer $TOKEN" --generation-deterministic --no-color \
    --report junit --report-junit-path load-tests/results/fuzz.junit.xml || status=$?
[ "$status" = 124 ] && echo "the fuzzing run passed FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-1800} s"
if grep -n "panicked" "$LOG"; then echo "the server panicked (log: $LOG)"; status=1; fi
kill -0 "$SERVER" 2>/dev/null || { echo "the server died (log: $LOG)"; status=1; }
echo "fuzz exit status $status; server log $LOG"
exit $status
