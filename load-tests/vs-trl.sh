#!/usr/bin/env bash
# srlm's DPO trainer against TRL's DPOTrainer on this machine, same model, same work:
# `srlm bench train --mode full` and load-tests/vs_trl.py train each do full fine-tuning
# in f32 on the same synthetic pairs (random token ids, PROMPT_LEN prompt + ANSWER_LEN
# chosen + ANSWER_LEN rejected tokens), a reference model alongside, beta 0.1, AdamW, one
# optimizer step per BATCH_SIZE pairs with MICRO_BATCH pairs per forward/backward, on the
# CPU with every core. The two take turns, round by round; each round prints both, and at
# the end come the medians and the ratios srlm / TRL for tokens/s and peak memory.
#
#   load-tests/vs-trl.sh                          # ROUNDS=2, 16 pairs of 2 × (128 + 128) tokens
#   SRLM=/path/to/srlm ROUNDS=3 load-tests/vs-trl.sh
#   PAIRS=2 PROMPT_LEN=8 ANSWER_LEN=8 ROUNDS=1 OUT=/tmp/vs-trl-smoke load-tests/vs-trl.sh   # a smoke test
#
# Tokens/s = pairs × 2 × (prompt + answer) / wall seconds of the whole run, reference pass
# included, on both sides (srlm times its trainer, TRL `trainer.train()`). Peak memory is
# each process's peak RSS: srlm's is all of srlm, TRL's all of Python, torch and both
# copies of the model.
#
# TRL comes from PyPI, pinned, into a venv (~/.cache/srlm-trl-venv; torch from PyPI brings
# its CUDA wheels, a few GB, once). Its model is the same GGUF file, dequantized to f32 by
# transformers' GGUF reader and saved once as an HF folder (~/.cache/srlm-trl). The srlm
# binary is $SRLM if set, else built here. Results go to $OUT.partial while the rounds run
# and replace $OUT (default load-tests/reports/vs-trl: the JSONs, logs, summary.md) only
# once all of them are done.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

ROUNDS="${ROUNDS:-2}"
PAIRS="${PAIRS:-16}"
PROMPT_LEN="${PROMPT_LEN:-128}"
ANSWER_LEN="${ANSWER_LEN:-128}"
BATCH_SIZE="${BATCH_SIZE:-16}"
MICRO_BATCH="${MICRO_BATCH:-1}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
OUT="${OUT:-load-tests/reports/vs-trl}"
VENV="${TRL_VENV:-$HOME/.cache/srlm-trl-venv}"
CACHE="${TRL_CACHE:-$HOME/.cache/srlm-trl}"
# trl 1.16.0 is the newest release; transformers 5.20.2 the patch release of the one that
# came out with it (TRL asks for >= 4.56.2); accelerate and datasets as pip resolved them.
PACKAGES="torch==2.15.0 trl==1.16.0 transformers==5.20.2 accelerate==1.16.0 datasets==5.2.0 gguf==0.19.0"
# Both sides on the CPU, even where a GPU is present (srlm built with CUDA would take it).
export CUDA_VISIBLE_DEVICES=""

scripts/fetch-model.sh
if [ -z "${SRLM:-}" ]; then
    cargo build --release --quiet --bin srlm
    SRLM="$CARGO_TARGET_DIR/release/srlm"
fi
if [ "$(cat "$VENV/srlm-packages" 2>/dev/null)" != "$PACKAGES" ]; then
    echo "installing TRL into $VENV (once)" >&2
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install --quiet --disable-pip-version-check $PACKAGES
    echo "$PACKAGES" > "$VENV/srlm-packages"
fi
PY="$VENV/bin/python"

WORK="${OUT%/}.partial"
if [ -n "$(ls -A "$OUT" 2>/dev/null)" ] && [ ! -f "$OUT/summary.md" ]; then
    echo "$OUT is not an earlier report of this script: not replacing it" >&2; exit 1
fi
rm -rf "$WORK"
mkdir -p "$WORK"
# Runs a command with its output in a log; on failure shows the log's end and stops.
logged() {
    local log=$1; shift
    "$@" > "$log" 2>&1 || { echo "failed: $* (log $log):" >&2; tail -20 "$log" >&2; exit 1; }
}

# The f32 HF folder, named by the GGUF's checksum so another file never reuses it.
HF="$CACHE/$(basename "$MODEL" .gguf)-$(sha256sum "$MODEL" | cut -c1-12)-f32"
logged "$WORK/convert.log" "$PY" load-tests/vs_trl.py convert "$MODEL" "$HF"

{
    echo "model=$MODEL pairs=$PAIRS prompt_len=$PROMPT_LEN answer_len=$ANSWER_LEN batch_size=$BATCH_SIZE micro_batch=$MICRO_BATCH rounds=$ROUNDS threads=$(nproc)"
    echo "srlm=$(git describe --always --dirty) binary=$SRLM ($("$SRLM" --version)) cpu='$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)'"
    echo "trl side: $("$PY" load-tests/vs_trl.py versions) model=$HF"
} | tee "$WORK/settings.txt"

# Per round (`report DIR N`) or over all rounds (`report DIR N final`): a Markdown table.
report() {
    python3 - "$@" <<'EOF'
import json, statistics, sys
out, rounds, final = sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3
def load(side, r):
    return json.load(open(f"{out}/{side}.r{r}.json"))
def row(label, s, t):
    st, tt = s["tokens_per_second"], t["tokens_per_second"]
    sm, tm = s["peak_rss_gib"], t["peak_rss_gib"]
    return (f"| {label} | {st:.1f} | {tt:.1f} | **{st / tt:.2f}×** | {sm:.2f} | {tm:.2f} | **{sm / tm:.2f}×** |")
head = ("| round | srlm tok/s | TRL tok/s | srlm / TRL | srlm peak RSS GiB | TRL peak RSS GiB | srlm / TRL |\n"
        "|---|---|---|---|---|---|---|")
runs = [(r, load("srlm", r), load("trl", r)) for r in (range(1, rounds + 1) if final else [rounds])]
print(head)
for r, s, t in runs:
    print(row(str(r), s, t))
if final:
    med = lambda side, key: statistics.median(x[1 if side == "srlm" else 2][key] for x in runs)
    s = {k: med("srlm", k) for k in ("tokens_per_second", "peak_rss_gib")}
    t = {k: med("trl", k) for k in ("tokens_per_second", "peak_rss_gib")}
    print(row("median", s, t))
    first = runs[0]
    print()
    print(f"Work: {first[1]['pairs']} pairs of {first[1]['tokens_per_pair']} tokens, full fine-tuning, f32; "
          f"srlm {first[1]['optimizer_steps']} optimizer step(s), TRL {first[2]['optimizer_steps']}; "
          f"srlm on {first[1]['device']} ({first[1]['threads']} threads), TRL on {first[2]['device']} "
          f"({first[2]['threads']} threads, {first[2]['optim']}).")
    print("Peak RSS is each whole process's: TRL's includes Python, torch, and the policy and reference "
          "copies of the model loaded from the f32 folder.")
    print(f"TRL side: {json.dumps(first[2]['versions'])}.")
    print()
    print(f"median tokens/s: srlm {s['tokens_per_second']:.1f}, TRL {t['tokens_per_second']:.1f}, "
          f"srlm / TRL {s['tokens_per_second'] / t['tokens_per_second']:.2f}×; "
          f"median peak RSS GiB: srlm {s['peak_rss_gib']:.2f}, TRL {t['peak_rss_gib']:.2f}, "
          f"srlm / TRL {s['peak_rss_gib'] / t['peak_rss_gib']:.2f}×")
EOF
}

for round in $(seq 1 "$ROUNDS"); do
    logged "$WORK/srlm.r$round.log" "$SRLM" bench train --mode full --model "$MODEL" --pairs "$PAIRS" \
        --prompt-len "$PROMPT_LEN" --answer-len "$ANSWER_LEN" --batch-size "$BATCH_SIZE" --micro-batch "$MICRO_BATCH" \
        --out "$WORK/srlm.r$round.json"
    logged "$WORK/trl.r$round.log" "$PY" load-tests/vs_trl.py train "$HF" --pairs "$PAIRS" \
        --prompt-len "$PROMPT_LEN" --answer-len "$ANSWER_LEN" --batch-size "$BATCH_SIZE" --micro-batch "$MICRO_BATCH" \
        --out "$WORK/trl.r$round.json"
    echo
    report "$WORK" "$round"
done

echo
{ cat "$WORK/settings.txt"; echo; report "$WORK" "$ROUNDS" final; } > "$WORK/summary.md"
tail -n +5 "$WORK/summary.md"  # less the settings, shown above
rm -rf "$OUT"
mv "$WORK" "$OUT"
echo "wrote $OUT" >&2
