#!/usr/bin/env bash
# The swap gate against a checkpoint made worse on purpose. M0 (the default model) is
# trained by DPO on verifiable pairs turned around — the answer that broke an instruction
# as "chosen", the one that followed them all as "rejected" — and `srlm eval gate` is
# asked whether that checkpoint may replace M0. As a control, the same pairs the right
# way round, same settings. The pairs are those of data/verifiable_pairs.jsonl past the
# gate's own (the gate judges the first 48), so the gate never sees what was trained on.
#
#   scripts/gate-reversed.sh            # outputs in load-tests/reports/gate-reversed/
#
# Settings: environment variables below. Its own database (dropped first) and files.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

LR="${LR:-5e-5}" FINAL_LR="${FINAL_LR:-5e-6}" BETA="${BETA:-0.1}" EPOCHS="${EPOCHS:-3}" BATCH="${BATCH:-4}"
SKIP="${SKIP:-48}"                  # pairs the gate judges, left out of training
GATE_PROMPTS="${GATE_PROMPTS:-320}" # yardstick prompts the gate measures (48 let the reversed checkpoint through)
CONTROL="${CONTROL:-1}"             # also train on the pairs the right way round
OUT="${OUT:-load-tests/reports/gate-reversed}"
WORK="${WORK:-$HOME/.cache/srlm-gate-reversed}"
DB=srlm_gate_reversed
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"

scripts/fetch-model.sh
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DB" 2>/dev/null || true
scripts/postgres.sh "$DB"
cargo build --release --quiet --bin srlm
mkdir -p "$OUT" "$WORK"
SRLM="$WORK/srlm"
cp "$CARGO_TARGET_DIR/release/srlm" "$SRLM"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }
: > "$OUT/run.log"
echo "lr=$LR final_lr=$FINAL_LR beta=$BETA epochs=$EPOCHS batch=$BATCH skip=$SKIP gate_prompts=$GATE_PROMPTS commit=$(git describe --always --dirty) host_cpus=$(nproc)" > "$OUT/settings.txt"

# M0, registered as checkpoint 1.
"$SRLM" checkpoints import models/SmolLM2-135M-Instruct.Q4_1.gguf --name M0 >/dev/null

# The training pairs, in TRL's preference format, both ways round.
python3 - "$SKIP" "$WORK" <<'EOF'
import json, sys
skip, work = int(sys.argv[1]), sys.argv[2]
rows = [json.loads(l) for l in open("data/verifiable_pairs.jsonl") if l.strip()][skip:]
def line(prompt, chosen, rejected):
    return json.dumps({"prompt": [{"role": "user", "content": prompt}],
                       "chosen": [{"role": "assistant", "content": chosen}],
                       "rejected": [{"role": "assistant", "content": rejected}]})
with open(f"{work}/reversed.jsonl", "w") as f:
    for r in rows:
        print(line(r["prompt"], r["answers"][1], r["answers"][0]), file=f)
with open(f"{work}/forward.jsonl", "w") as f:
    for r in rows:
        print(line(r["prompt"], r["answers"][0], r["answers"][1]), file=f)
print(f"{len(rows)} training pairs", file=sys.stderr)
EOF

# `arm NAME`: DPO of M0 on $WORK/NAME.jsonl, then the gate on the result against M0.
arm() {
    local name=$1 started=$SECONDS
    log "$name: training"
    "$SRLM" train dpo --checkpoint 1 --pairs "$WORK/$name.jsonl" --no-announce \
        --lr "$LR" --final-lr "$FINAL_LR" --beta "$BETA" --epochs "$EPOCHS" --batch-size "$BATCH" \
        --out "$WORK/$name.gguf" --name "$name" > "$OUT/$name.train.json" 2>> "$OUT/train.log"
    local id
    id=$(psql -h 127.0.0.1 -U postgres -d "$DB" -tAc "SELECT id FROM checkpoints WHERE name = '$name'")
    log "$name: trained as checkpoint $id in $((SECONDS - started)) s; the gate"
    started=$SECONDS
    local rc=0
    "$SRLM" eval gate --parent 1 --child "$id" --gate-prompts "$GATE_PROMPTS" > "$OUT/$name.gate.json" 2>> "$OUT/gate.log" || rc=$?
    log "$name: gate exit $rc in $((SECONDS - started)) s: $(tail -1 "$OUT/gate.log")"
}
arm reversed
[ "$CONTROL" = 1 ] && arm forward
log "done: $OUT"
