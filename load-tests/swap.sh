#!/usr/bin/env bash
# Hot-swap under load: streamed chat at concurrency 8 (`srlm bench chat`) while the
# served checkpoint is swapped back and forth every 3 s through the admin API. Prints
# the bench's table (errors must be 0) and each swap's load time; writes
# load-tests/results/swap.json. The server must run with --admin-token $SRLM_ADMIN_TOKEN
# and a database; the second checkpoint is the default model under another name.
#   SRLM_ADMIN_TOKEN=... load-tests/swap.sh [URL]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
URL="${1:-http://127.0.0.1:8080}"
: "${SRLM_ADMIN_TOKEN:?set SRLM_ADMIN_TOKEN to the admin token of the server}"
cargo build --release --quiet --bin srlm
BIN="$CARGO_TARGET_DIR/release/srlm"
mkdir -p load-tests/results
A=$(curl -fs "$URL/v1/models" | jq '.data[0].checkpoint_id')
B_FILE="$PWD/models/swap-b.gguf"
ln -sf "$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$B_FILE"
B=$(psql "$DATABASE_URL" -tAc "SELECT id FROM checkpoints WHERE path = '$B_FILE'")
[ -n "$B" ] || B=$("$BIN" checkpoints import "$B_FILE" --parent "$A" --name swap-b 2>/dev/null | jq .id)
"$BIN" bench chat --url "$URL" --concurrency 8 --requests "${REQUESTS:-64}" --max-tokens 64 --label swap \
    --out load-tests/results/swap-chat.json &
BENCH=$!
swaps=()
target=$B
sleep 2
while kill -0 "$BENCH" 2>/dev/null; do
    s=$(curl -fs -X POST -H "Authorization: Bearer $SRLM_ADMIN_TOKEN" "$URL/admin/checkpoints/$target/activate" | jq .load_seconds)
    swaps+=("$s"); echo "swapped to checkpoint $target (load ${s} s)"
    target=$([ "$target" = "$B" ] && echo "$A" || echo "$B")
    sleep 3
done
wait "$BENCH"
curl -fs -X POST -H "Authorization: Bearer $SRLM_ADMIN_TOKEN" "$URL/admin/checkpoints/$A/activate" >/dev/null
jq --argjson swaps "[$(IFS=,; echo "${swaps[*]}")]" '{chat: ., swap_load_seconds: $swaps}' load-tests/results/swap-chat.json \
    >load-tests/results/swap.json
echo "${#swaps[@]} swaps under load; results: load-tests/results/swap.json"
