#!/usr/bin/env bash
# Fault scenarios, each against a server of this script's own (release build, the
# default model, loopback) and a private Postgres cluster it can stop and start:
#   1. Postgres restarted while chat and /generate requests flow;
#   2. a client disconnecting mid-stream;
#   3. the trainer killed mid-run (its pairs must come back after the lease);
#   4. a corrupt checkpoint (refused; the old model keeps serving);
#   5. SIGTERM with requests in flight (they finish and record; new connections refused).
# Prints each check and writes load-tests/results/faults.json; exits non-zero if a
# check fails. Needs Debian's PostgreSQL binaries (scripts/postgres.sh installs them).
#   load-tests/faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --quiet --bin srlm
BIN="$CARGO_TARGET_DIR/release/srlm"
MODEL="$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf"
scripts/fetch-model.sh
PG_PORT=55432 PORT=18093 TOKEN=fault-admin
BASE="http://127.0.0.1:$PORT"
WORK=$(mktemp -d /tmp/srlm-faults.XXXXXX)
chmod 777 "$WORK"
PGBIN="/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -V | tail -1)/bin"
DB="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else bash -c "$*"; fi; }
pg_start() { as_pg "$PGBIN/pg_ctl -D $WORK/pg -o '-p $PG_PORT -k $WORK' -l $WORK/pg.log -w start" >/dev/null; }
pg_stop() { as_pg "$PGBIN/pg_ctl -D $WORK/pg -m fast -w stop" >/dev/null; }
sql() { psql "$DB" -tAc "$1"; }
SERVER_PID=""
cleanup() {
    [ "$FAILED" = 0 ] || cp "$WORK"/*.log /tmp/ 2>/dev/null || true
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    as_pg "$PGBIN/pg_ctl -D $WORK/pg -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
FAILED=0
trap 'FAILED=1; echo "stopped at line $LINENO"' ERR
trap cleanup EXIT
check() { # check NAME CONDITION-RESULT(0/1) DETAIL
    if [ "$2" = 0 ]; then echo "ok   $1: $3"; else echo "FAIL $1: $3"; FAILED=1; fi
}

as_pg "$PGBIN/initdb -D $WORK/pg -A trust -U postgres" >/dev/null
pg_start
"$BIN" serve --port "$PORT" --database-url "$DB" --admin-token "$TOKEN" --model "$MODEL" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 120); do curl -fs "$BASE/ready" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fs "$BASE/ready" >/dev/null || { echo "server did not become ready"; tail -20 "$WORK/server.log"; exit 1; }
served() { curl -fs "$BASE/v1/models" | jq '.data[0].checkpoint_id'; }
chat() { curl -s -o /dev/null -w '%{http_code}\n' "$BASE/v1/chat/completions" -H 'content-type: application/json' \
    -d "{\"model\":\"current\",\"messages\":[{\"role\":\"user\",\"content\":\"$1\"}],\"max_tokens\":8,\"temperature\":0}"; }
generate() { curl -s -o /dev/null -w '%{http_code}\n' "$BASE/generate" -H 'content-type: application/json' \
    -d "{\"messages\":[{\"role\":\"user\",\"content\":\"$1\"}],\"n\":${2:-2},\"max_tokens\":${3:-8},\"judge\":{\"samples\":1,\"method\":\"expected\"}}"; }

# 1. Postgres restarted under traffic.
echo "== Postgres restart while requests flow"
END=$((SECONDS + 24))
( while [ $SECONDS -lt $END ]; do chat "Name a colour."; done ) >"$WORK/chat.codes" &
CHAT_LOOP=$!
( i=0; while [ $SECONDS -lt $END ]; do i=$((i + 1)); echo "$(date +%s.%N) $(generate "Fault prompt $i: name a fruit.")"; done ) >"$WORK/generate.codes" &
GEN_LOOP=$!
sleep 5; pg_stop
DOWN_START=$SECONDS
down_code=$(generate "Asked while Postgres is down.")
sleep $((7 - (SECONDS - DOWN_START) > 0 ? 7 - (SECONDS - DOWN_START) : 0)); pg_start; STARTED_AT=$(date +%s.%N)
wait $CHAT_LOOP $GEN_LOOP
chat_total=$(wc -l <"$WORK/chat.codes"); chat_ok=$(grep -c '^200$' "$WORK/chat.codes" || true)
gen_ok=$(awk '$2 == 200' "$WORK/generate.codes" | wc -l)
gen_503=$(awk '$2 == 503' "$WORK/generate.codes" | wc -l)
gen_other=$(awk '$2 != 200 && $2 != 503' "$WORK/generate.codes" | wc -l)
gen_ok_after=$(awk -v t="$STARTED_AT" '$1 > t && $2 == 200' "$WORK/generate.codes" | wc -l)
prompts=$(sql "SELECT count(*) FROM prompts")
orphans=$(sql "SELECT count(*) FROM prompts p WHERE NOT EXISTS (SELECT 1 FROM candidates c WHERE c.prompt_id = p.id)")
unjudged=$(sql "SELECT count(*) FROM candidates c WHERE NOT EXISTS (SELECT 1 FROM judgments j WHERE j.candidate_id = c.id)")
check "chat kept working" "$([ "$chat_ok" = "$chat_total" ] && echo 0 || echo 1)" "$chat_ok/$chat_total chat requests 200"
check "recording failed cleanly" "$([ "$down_code" = 503 ] && [ "$gen_other" = 0 ] && echo 0 || echo 1)" \
    "/generate while Postgres was down: $down_code; in the loop: $gen_ok 200, $gen_503 503, $gen_other other"
check "recording came back" "$([ "$gen_ok_after" -gt 0 ] && echo 0 || echo 1)" "$gen_ok_after /generate 200s after the restart"
check "nothing lost or half-written" "$([ "$prompts" = "$gen_ok" ] && [ "$orphans" = 0 ] && [ "$unjudged" = 0 ] && echo 0 || echo 1)" \
    "$prompts prompts stored for $gen_ok successful /generate; $orphans without candidates; $unjudged candidates without judgments"

# 2. A client disconnecting mid-stream.
echo "== client disconnect mid-stream"
metric() { curl -fs "$BASE/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
curl -s -N --max-time 2 "$BASE/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model":"current","messages":[{"role":"user","content":"Write a very long story about the sea."}],"max_tokens":4000,"stream":true,"temperature":0.8}' \
    >"$WORK/stream.txt" || true
chunks=$(grep -c '^data:' "$WORK/stream.txt" || true)
sleep 1
in_flight=$(metric srlm_requests_in_flight)
t0=$(date +%s.%N); code=$(chat "Say hi."); t1=$(date +%s.%N)
check "generation stopped with the client" "$([ "${in_flight%.*}" = 0 ] && [ "$code" = 200 ] && echo 0 || echo 1)" \
    "$chunks chunks received before the disconnect; in flight 1 s later: $in_flight; next chat $code in $(echo "$t1 - $t0" | bc) s"

# 3. The trainer killed mid-run.
echo "== trainer killed mid-run"
for i in $(seq 1 12); do generate "Question $i for training: why is the sky blue?" 4 24 >/dev/null; done
ID=$(served)
pairs=$(sql "SELECT count(*) FROM pairs WHERE checkpoint_id = $ID AND status = 'available'")
"$BIN" train dpo --database-url "$DB" --checkpoint "$ID" --lease-secs 10 --out "$WORK/killed.gguf" >"$WORK/trainer1.log" 2>&1 &
TRAINER=$!
for _ in $(seq 1 100); do [ "$(sql "SELECT count(*) FROM pairs WHERE status = 'claimed'")" -gt 0 ] && break; sleep 0.2; done
sleep 1
kill -0 "$TRAINER" 2>/dev/null || { echo "the trainer ended before it could be killed:"; tail -5 "$WORK/trainer1.log"; }
kill -9 "$TRAINER" 2>/dev/null || true
wait "$TRAINER" 2>/dev/null || true
claimed=$(sql "SELECT count(*) FROM pairs WHERE status = 'claimed'")
sleep 11  # the lease (10 s, the shortest the trainer takes) runs out
"$BIN" train dpo --database-url "$DB" --checkpoint "$ID" --out "$WORK/m1.gguf" --dtype q8_0 >"$WORK/trainer2.log" 2>&1 \
    || { echo "the second trainer failed:"; tail -5 "$WORK/trainer2.log"; }
consumed=$(sql "SELECT count(*) FROM pairs WHERE status = 'consumed'")
runs=$(sql "SELECT string_agg(status, ',' ORDER BY id) FROM training_runs")
check "pairs came back after the lease" "$([ "$pairs" -gt 0 ] && [ "$claimed" = "$pairs" ] && [ "$consumed" = "$pairs" ] && [ "$runs" = failed,succeeded ] && echo 0 || echo 1)" \
    "$pairs pairs; $claimed claimed by the killed trainer; $consumed consumed by the next run; runs: $runs"

# 4. A corrupt checkpoint.
echo "== corrupt checkpoint"
head -c 6000000 "$MODEL" >"$WORK/truncated.gguf"
printf 'not a model' >"$WORK/garbage.gguf"
garbage=$("$BIN" checkpoints import "$WORK/garbage.gguf" --database-url "$DB" --parent "$ID" >/dev/null 2>&1 && echo accepted || echo refused)
bad=$("$BIN" checkpoints import "$WORK/truncated.gguf" --database-url "$DB" --parent "$ID" 2>/dev/null | jq .id)
code=$(curl -s -o "$WORK/activate.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" "$BASE/admin/checkpoints/$bad/activate")
status=$(sql "SELECT status FROM checkpoints WHERE id = $bad")
check "corrupt checkpoint refused, old one serving" "$([ "$garbage" = refused ] && [ "$code" = 422 ] && [ "$status" = failed ] && [ "$(served)" = "$ID" ] && [ "$(chat "Still there?")" = 200 ] && echo 0 || echo 1)" \
    "import of garbage: $garbage; activating a truncated GGUF: HTTP $code ($(jq -r .error.message "$WORK/activate.json" | cut -c1-90)…); row status $status; still serving checkpoint $(served)"

# 5. SIGTERM with requests in flight.
echo "== SIGTERM drains requests in flight"
before=$(sql "SELECT count(*) FROM prompts")
long_chat() { curl -s -o "$WORK/drain-chat.json" -w '%{http_code}' "$BASE/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model":"current","messages":[{"role":"user","content":"Tell a long story about a fox."}],"max_tokens":200,"temperature":0}'; }
long_chat >"$WORK/drain-chat.code" &
CHAT=$!
generate "A question in flight at shutdown." 2 64 >"$WORK/drain-gen.code" &
GEN=$!
sleep 1
kill -TERM "$SERVER_PID"
T0=$SECONDS
sleep 0.5
refused=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/health" || true)
wait "$CHAT" "$GEN" || true
wait "$SERVER_PID" 2>/dev/null || true
exit_secs=$((SECONDS - T0)); SERVER_PID=""
drain_chat=$(cat "$WORK/drain-chat.code"); drain_gen=$(cat "$WORK/drain-gen.code")
tokens=$(jq .usage.completion_tokens "$WORK/drain-chat.json" 2>/dev/null || echo 0)
after=$(sql "SELECT count(*) FROM prompts")
check "in-flight requests finished and recorded" "$([ "$drain_chat" = 200 ] && [ "$drain_gen" = 200 ] && [ "$after" = $((before + 1)) ] && [ "$refused" = 000 ] && echo 0 || echo 1)" \
    "chat $drain_chat ($tokens tokens), /generate $drain_gen, prompts $before → $after; a new connection after SIGTERM: ${refused/000/refused}; exited ${exit_secs} s after the signal"

mkdir -p load-tests/results
jq -n --argjson chat_ok "$chat_ok" --argjson chat_total "$chat_total" --argjson gen_ok "$gen_ok" --argjson gen_503 "$gen_503" --argjson down_code "$down_code" \
    --argjson gen_other "$gen_other" --argjson gen_ok_after "$gen_ok_after" --argjson prompts "$prompts" --argjson orphans "$orphans" \
    --argjson unjudged "$unjudged" --argjson chunks "$chunks" --arg in_flight "$in_flight" --argjson pairs "$pairs" \
    --argjson claimed "$claimed" --argjson consumed "$consumed" --arg garbage "$garbage" --argjson activate_status "$code" \
    --arg drain_chat "$drain_chat" --arg drain_gen "$drain_gen" --argjson drain_exit "$exit_secs" --argjson failed "$FAILED" \
    '{postgres_restart: {chat_ok: $chat_ok, chat_total: $chat_total, generate_ok: $gen_ok, generate_503: $gen_503, generate_other: $gen_other, generate_while_down: $down_code,
      generate_ok_after_restart: $gen_ok_after, prompts_stored: $prompts, prompts_without_candidates: $orphans, candidates_without_judgments: $unjudged},
      disconnect: {chunks_before_disconnect: $chunks, in_flight_after: $in_flight},
      trainer_kill: {pairs: $pairs, claimed_by_killed: $claimed, consumed_by_next: $consumed},
      corrupt_checkpoint: {garbage_import: $garbage, truncated_activate_status: $activate_status},
      sigterm: {chat_status: $drain_chat, generate_status: $drain_gen, exit_seconds: $drain_exit}, failed: ($failed == 1)}' \
    >load-tests/results/faults.json
echo "results: load-tests/results/faults.json"
exit "$FAILED"
