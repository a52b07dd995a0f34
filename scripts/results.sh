#!/usr/bin/env bash
# The README's "Results" run on this machine with the default model, one arm per call:
#
#   scripts/results.sh judge          # (a) pure self-rewarding: the judge decides every pair
#   scripts/results.sh judge+verify   # (b) the verifier first, the judge where it cannot tell
#
# M0 (the default model) → M1 = SFT(M0) on data/ift.jsonl + data/eft.jsonl → M2 → M3, each
# later one a `srlm loop` iteration (self-instruction and/or checkable requests, N answers,
# judged by the model itself, DPO, the swap gate). Every checkpoint is measured on the whole
# yardstick (`eval ifeval`, 320 held-out prompts, greedy), and each child against its parent
# head to head with M1 as the fixed judge. The judge's accuracy on the verifiable pairs comes
# from the gate (the first 48 pairs, one `expected` sample).
#
# Resumable: each stage writes its file under $OUT and is skipped when the file exists; the
# loop itself continues from Postgres. Its own database (srlm_results_<arm>) and port keep it
# apart from anything else. Settings: environment variables below (the defaults are the run
# the README reports).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

ARM="${1:?usage: scripts/results.sh judge|judge+verify}"
case "$ARM" in
    judge) SLUG=judge; SHARE="${SHARE:-0}" ;;
    judge+verify) SLUG=judge_verify; SHARE="${SHARE:-0.5}" ;;
    *) echo "arm must be judge or judge+verify" >&2; exit 2 ;;
esac
ITERATIONS="${ITERATIONS:-2}"        # M1 → M2 → M3
PROMPTS="${PROMPTS:-64}"             # new prompts per iteration
N="${N:-4}"                          # answers per prompt
SAMPLES="${SAMPLES:-1}"              # judge samples per answer
METHOD="${METHOD:-expected}"
MAX_TOKENS="${MAX_TOKENS:-192}"      # per answer in the loop
LR="${LR:-5e-6}" FINAL_LR="${FINAL_LR:-5e-7}" BETA="${BETA:-0.1}" EPOCHS="${EPOCHS:-2}" BATCH="${BATCH:-8}"
H2H_LIMIT="${H2H_LIMIT:-32}"
PORT="${PORT:-8091}"
OUT="${OUT:-load-tests/reports/results/$SLUG}"
CKPT="${CKPT:-$HOME/.cache/srlm-results/$SLUG}"
TOKEN="results-$SLUG"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/srlm_results_$SLUG"
URL="http://127.0.0.1:$PORT"

scripts/fetch-model.sh
scripts/postgres.sh "srlm_results_$SLUG"
cargo build --release --quiet --bin srlm
mkdir -p "$OUT" "$CKPT"
# (a copy: a build meanwhile must not change the binary under a running stage)
SRLM="$CKPT/srlm"
cp "$CARGO_TARGET_DIR/release/srlm" "$SRLM"
M0="$(realpath models/SmolLM2-135M-Instruct.Q4_1.gguf)"

sql() { psql -h 127.0.0.1 -U postgres -d "srlm_results_$SLUG" -tAc "$1"; }
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }
# `stage NAME command…`: runs the command once, its stdout kept in $OUT/NAME.json and its
# wall time in $OUT/NAME.seconds.
stage() {
    local name=$1; shift
    [ -s "$OUT/$name.json" ] && { log "$name: done before"; return; }
    log "$name: $*"
    local started=$SECONDS
    local rc=0
    "$@" > "$OUT/$name.json.part" 2> >(tee -a "$OUT/run.log" >&2) || rc=$?
    [ -s "$OUT/$name.json.part" ] && mv "$OUT/$name.json.part" "$OUT/$name.json"
    echo $((SECONDS - started)) > "$OUT/$name.seconds"
    log "$name: exit $rc, $((SECONDS - started)) s"
    return $rc
}
active_path() { sql "SELECT path FROM checkpoints WHERE status = 'active' ORDER BY activated_at DESC LIMIT 1"; }
id_of() { sql "SELECT id FROM checkpoints WHERE path = '$1'"; }

SERVER=
serve() {
    [ -n "$SERVER" ] && { kill "$SERVER"; wait "$SERVER" || true; }
    "$SRLM" serve --model "$1" --port "$PORT" --admin-token "$TOKEN" >> "$OUT/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 120); do curl -sf "$URL/ready" >/dev/null && return; sleep 1; done
    echo "the server did not become ready (see $OUT/server.log)" >&2; exit 1
}
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null || true' EXIT
{ echo "arm=$ARM share=$SHARE iterations=$ITERATIONS prompts=$PROMPTS n=$N samples=$SAMPLES method=$METHOD max_tokens=$MAX_TOKENS"
  echo "dpo: lr=$LR final_lr=$FINAL_LR beta=$BETA epochs=$EPOCHS batch=$BATCH; h2h_limit=$H2H_LIMIT"
  echo "commit=$(git rev-parse --short HEAD) host_cpus=$(nproc) started=$(date -u +%FT%TZ)"; } >> "$OUT/settings.txt"

# M0: registered by serving it.
serve "$(active_path | grep . || echo "$M0")"
M0_ID=$(id_of "$M0")
stage m0.ifeval "$SRLM" eval ifeval --concurrency 32 --model "$M0_ID" --out "$OUT/m0.ifeval.answers.json"

# M1 = SFT(M0) on the seed IFT and EFT data, then served.
M1="$CKPT/m1.gguf"
stage m1.sft "$SRLM" train sft --model "$M0" --data data/ift.jsonl --data data/eft.jsonl --out "$M1" --name "m1-$SLUG"
M1_ID=$(id_of "$M1")
# (the server swaps it in; a rerun serves whatever is active)
[ "$(active_path)" = "$M0" ] && curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$URL/admin/checkpoints/$M1_ID/activate" >/dev/null
stage m1.ifeval "$SRLM" eval ifeval --concurrency 32 --model "$M1_ID" --out "$OUT/m1.ifeval.answers.json"

# M(t+1) = one loop iteration from M(t), measured and compared with its parent.
parent=$M1
for t in $(seq 2 $((ITERATIONS + 1))); do
    child="$CKPT/m$t.gguf"
    [ "$(active_path)" = "$parent" ] || [ -s "$OUT/iter$t.json" ] || { echo "M$((t - 1)) is not the active checkpoint" >&2; exit 1; }
    # (exits non-zero when the gate refuses M(t+1); its report is kept all the same)
    stage "iter$t" "$SRLM" loop --url "$URL" --admin-token "$TOKEN" --iterations 1 --prompts "$PROMPTS" --n "$N" \
        --samples "$SAMPLES" --method "$METHOD" --max-tokens "$MAX_TOKENS" --concurrency 8 \
        --reward "$ARM" --verifiable-share "$SHARE" --seed "$t" --out-dir "$CKPT" \
        --lr "$LR" --final-lr "$FINAL_LR" --beta "$BETA" --epochs "$EPOCHS" --batch-size "$BATCH" || true
    child_id=$(id_of "$child")
    stage "m$t.ifeval" "$SRLM" eval ifeval --concurrency 32 --model "$child_id" --out "$OUT/m$t.ifeval.answers.json"
    stage "m$t.h2h" "$SRLM" eval h2h --a "$child_id" --b "$(id_of "$parent")" --judge "$M1_ID" --limit "$H2H_LIMIT" --concurrency 8 \
        --out "$OUT/m$t.h2h.answers.json"
    [ "$(active_path)" = "$child" ] || { log "M$t was not activated (gate refused it): stopping"; break; }
    parent=$child
done
# The last checkpoint against M1 head to head (M1 judging, both orders): the arm's win − loss.
[ "$parent" != "$M1" ] && stage "$(basename "$parent" .gguf)-vs-m1.h2h" "$SRLM" eval h2h --a "$(id_of "$parent")" --b "$M1_ID" \
    --judge "$M1_ID" --limit "$H2H_LIMIT" --concurrency 8 --out "$OUT/$(basename "$parent" .gguf)-vs-m1.h2h.answers.json"
log "done: $OUT"
