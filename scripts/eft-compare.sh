#!/usr/bin/env bash
# The paper's EFT recipe against the project's hand-written judge data (issue 14, point 4).
#
#   scripts/eft-compare.sh        # outputs in load-tests/reports/eft-compare/
#
# 1. M0 (the default model) judges the human-scored responses of data/eft.source.jsonl,
#    SAMPLES times each; a question's judgments are kept only where they order its
#    responses as the human scores do (`srlm data make-eft`) → data/eft.self.jsonl.
# 2. Two M1s from M0 by SFT, the same IFT data and settings: one with the hand-written
#    EFT set (data/eft.jsonl, what M1 is trained on today), one with the self-made one.
#    HAND_M1=path reuses a hand-EFT M1 already trained that way (scripts/results.sh's m1).
# 3. Each judge (M0 and both M1s), one `expected` sample per answer as the loop and the
#    gate judge, on the verifiable pairs (data/verifiable_pairs.jsonl) and on the
#    human-ranked set (data/ranked.jsonl): pairwise accuracy with its 95 % interval.
#
# Resumable: each stage writes its file under $OUT and is skipped when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

SAMPLES="${SAMPLES:-4}"             # judge samples per human-scored response
PORT="${PORT:-8092}"
OUT="${OUT:-load-tests/reports/eft-compare}"
WORK="${WORK:-$HOME/.cache/srlm-eft-compare}"
SELF_EFT="${SELF_EFT:-data/eft.self.jsonl}"
HAND_M1="${HAND_M1:-}"
DIAGNOSE_LIMIT="${DIAGNOSE_LIMIT:-45}"  # EFT questions of step 4 (15 took 3.3 min here)
DB=srlm_eft_compare
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
URL="http://127.0.0.1:$PORT"

scripts/fetch-model.sh
scripts/postgres.sh "$DB"
cargo build --release --quiet --bin srlm
mkdir -p "$OUT" "$WORK"
SRLM="$WORK/srlm"
[ -x "$SRLM" ] || cp "$CARGO_TARGET_DIR/release/srlm" "$SRLM"
M0="$(realpath models/SmolLM2-135M-Instruct.Q4_1.gguf)"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }
echo "samples=$SAMPLES diagnose_limit=$DIAGNOSE_LIMIT hand_m1=${HAND_M1:-trained here} commit=$(git describe --always --dirty) host_cpus=$(nproc) started=$(date -u +%FT%TZ)" >> "$OUT/settings.txt"

# `stage FILE command…`: runs the command once, until FILE exists (stdout kept in FILE when
# the command writes none itself), its wall time in FILE.seconds.
stage() {
    local file=$1; shift
    [ -s "$file" ] && { log "$(basename "$file"): done before"; return; }
    log "$(basename "$file"): $*"
    local started=$SECONDS
    "$@" > "$file.part" 2> >(tee -a "$OUT/run.log" >&2)
    if [ -s "$file.part" ]; then mv "$file.part" "$file"; else rm -f "$file.part"; fi
    echo $((SECONDS - started)) > "$file.seconds"
    log "$(basename "$file"): $((SECONDS - started)) s"
}

SERVER=
serve() {
    [ -n "$SERVER" ] && { kill "$SERVER"; wait "$SERVER" || true; }
    "$SRLM" serve --model "$1" --port "$PORT" >> "$OUT/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 120); do curl -sf "$URL/ready" >/dev/null && return; sleep 1; done
    echo "the server did not become ready (see $OUT/server.log)" >&2; exit 1
}
trap '[ -n "$SERVER" ] && kill $SERVER 2>/dev/null || true' EXIT

# 1. the self-made EFT set (M0 judging in process)
# (make-eft writes the file itself, empty when no question agreed; its stderr line in
# run.log says how many did)
[ -e "$SELF_EFT" ] && log "$SELF_EFT: done before ($(wc -l < "$SELF_EFT") examples)" ||
    stage "$OUT/make-eft.log" "$SRLM" data make-eft --model "$M0" --samples "$SAMPLES" --concurrency 4 --out "$SELF_EFT"
# What the recipe yields is what M1 gets: with no agreeing question, IFT alone.
SELF_DATA=(--data data/ift.jsonl)
[ -s "$SELF_EFT" ] && SELF_DATA+=(--data "$SELF_EFT")

# 2. the two M1s
if [ -n "$HAND_M1" ]; then
    M1_HAND="$HAND_M1"
    # (it may still be training: the trainer renames the finished file into place)
    until [ -s "$M1_HAND" ]; do sleep 30; done
else
    M1_HAND="$WORK/m1-hand.gguf"
    stage "$OUT/m1-hand.sft.json" "$SRLM" train sft --model "$M0" --data data/ift.jsonl --data data/eft.jsonl --out "$M1_HAND" --name m1-hand-eft
fi
M1_SELF="$WORK/m1-self.gguf"
stage "$OUT/m1-self.sft.json" "$SRLM" train sft --model "$M0" "${SELF_DATA[@]}" --out "$M1_SELF" --name m1-self-eft

# 3. each judge on both sets
for judge in m0 m1-hand m1-self; do
    case $judge in m0) model=$M0 ;; m1-hand) model=$M1_HAND ;; m1-self) model=$M1_SELF ;; esac
    if [ -s "$OUT/$judge.verifiable.json" ] && [ -s "$OUT/$judge.ranked.json" ]; then continue; fi
    serve "$model"
    for set in verifiable ranked; do
        case $set in verifiable) data=data/verifiable_pairs.jsonl ;; ranked) data=data/ranked.jsonl ;; esac
        stage "$OUT/$judge.$set.json" "$SRLM" eval rm --url "$URL" --data "$data" --methods expected --samples 1
    done
done

# 4. Why the recipe keeps what it keeps: M0's judge on the EFT source itself, as a ranked
#    set (each question's responses in human-score order), SAMPLES free samples per
#    response as make-eft draws them (its parse rate: a response with no parsed sample
#    drops its question).
if [ ! -s "$OUT/m0.eft-source.json" ]; then  # (as in 3: no server started for a done stage)
    python3 - "$WORK/eft.ranked.jsonl" <<'EOF'
import collections, json, sys
by = collections.defaultdict(list)
for line in open("data/eft.source.jsonl"):
    if line.strip():
        r = json.loads(line)
        by[r["question"]].append(r)
with open(sys.argv[1], "w") as f:
    for q, rs in by.items():
        rs.sort(key=lambda r: -r["score"])
        print(json.dumps({"prompt": q, "answers": [r["response"] for r in rs], "scores": [r["score"] for r in rs]}), file=f)
EOF
    serve "$M0"
    stage "$OUT/m0.eft-source.json" "$SRLM" eval rm --url "$URL" --data "$WORK/eft.ranked.jsonl" --methods sample \
        --samples "$SAMPLES" --limit "$DIAGNOSE_LIMIT"
fi
log "done: $OUT"
