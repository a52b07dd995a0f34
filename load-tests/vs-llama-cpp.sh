#!/usr/bin/env bash
# srlm against llama.cpp's llama-server on the same GGUF file, on this machine, under the
# same load: streamed chat completions (`srlm bench chat`: 128 new tokens, temperature
# 0.7, EOS ignored so every request decodes the same length) at each concurrency, the
# two servers taking turns round by round. Prints every figure and, per concurrency,
# the median of each side and the ratio srlm / llama-server.
#
#   load-tests/vs-llama-cpp.sh                 # ROUNDS=3 LEVELS="1 8 32"
#   SRLM_ARGS="--weights q8_0" load-tests/vs-llama-cpp.sh    # srlm's earlier path
#   SRLM_KERNELS=avx2 load-tests/vs-llama-cpp.sh             # srlm's AVX2 kernels on an AVX-512 CPU
#
# llama-server is built once (into ~/.cache/srlm-llama-cpp) from the llama.cpp that the
# llama-cpp-python sdist on PyPI vendors, with this CPU's SIMD flags named explicitly
# (GGML_NATIVE dies with SIGILL on some VMs); cmake comes from PyPI too. Both servers get
# every core: llama-server `-t $(nproc)` and 32 slots with continuous batching, srlm its
# defaults (32 sequences).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

VERSION="${LLAMA_CPP_PYTHON:-0.3.36}"
ROUNDS="${ROUNDS:-3}"
LEVELS="${LEVELS:-1 8 32}"
MAX_TOKENS="${MAX_TOKENS:-128}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
SRLM_ARGS="${SRLM_ARGS:-}"
OUT="${OUT:-load-tests/reports/vs-llama-cpp}"
CACHE="${LLAMA_CPP_CACHE:-$HOME/.cache/srlm-llama-cpp}"
SRLM_PORT=8097 LLAMA_PORT=8098
THREADS=$(nproc)

export DATABASE_URL="postgres://postgres@127.0.0.1:5432/srlm_bench"
scripts/fetch-model.sh
scripts/postgres.sh srlm_bench
cargo build --release --quiet --bin srlm
SRLM="$CARGO_TARGET_DIR/release/srlm"
mkdir -p "$OUT" "$CACHE"

# The SIMD flags this CPU has (x86): what llama.cpp would pick natively, named.
simd_flags() {
    local flags=(-DGGML_NATIVE=OFF) pair
    for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI \
        avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
        if grep -qw "${pair%%:*}" /proc/cpuinfo; then flags+=("-DGGML_${pair##*:}=ON"); else flags+=("-DGGML_${pair##*:}=OFF"); fi
    done
    echo "${flags[@]}"
}

BUILD="$CACHE/llama-cpp-python-$VERSION/build"
LLAMA_SERVER="$BUILD/bin/llama-server"
if [ ! -x "$LLAMA_SERVER" ] || [ "$(cat "$BUILD/srlm-flags" 2>/dev/null)" != "$(simd_flags)" ]; then
    echo "building llama-server from llama-cpp-python $VERSION (once)" >&2
    [ -x "$CACHE/venv/bin/cmake" ] || { python3 -m venv "$CACHE/venv" && "$CACHE/venv/bin/pip" install --quiet cmake ninja; }
    # The sdist's address and checksum from PyPI's simple index (pip download would
    # build its metadata, and with it cmake, from source).
    link=$(curl -sf https://pypi.org/simple/llama-cpp-python/ | grep -o "https://[^\"]*/llama_cpp_python-$VERSION.tar.gz#sha256=[0-9a-f]*")
    mkdir -p "$CACHE/sdist"
    curl -sfL "${link%%#*}" -o "$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz"
    echo "${link##*sha256=}  $CACHE/sdist/llama_cpp_python-$VERSION.tar.gz" | sha256sum -c --quiet
    tar xzf "$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE"
    src="$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp"
    # shellcheck disable=SC2046
    "$CACHE/venv/bin/cmake" -S "$src" -B "$BUILD" -G Ninja -DCMAKE_MAKE_PROGRAM="$CACHE/venv/bin/ninja" \
        -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        $(simd_flags) > "$OUT/llama-build.log"
    "$CACHE/venv/bin/cmake" --build "$BUILD" --target llama-server -j "$THREADS" >> "$OUT/llama-build.log"
    simd_flags > "$BUILD/srlm-flags"
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_up() {
    for _ in $(seq 1 120); do curl -sf "$1" >/dev/null && return 0; sleep 1; done
    echo "no answer from $1" >&2; exit 1
}
# shellcheck disable=SC2086
"$SRLM" serve --model "$MODEL" --host 127.0.0.1 --port "$SRLM_PORT" $SRLM_ARGS > "$OUT/srlm.log" 2>&1 &
pids+=($!)
"$LLAMA_SERVER" -m "$MODEL" --host 127.0.0.1 --port "$LLAMA_PORT" -np 32 -c $((32 * 1024)) -t "$THREADS" -cb > "$OUT/llama-server.log" 2>&1 &
pids+=($!)
wait_up "http://127.0.0.1:$SRLM_PORT/health"
wait_up "http://127.0.0.1:$LLAMA_PORT/health"
weights=$(curl -s "http://127.0.0.1:$SRLM_PORT/ready" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("weights", "?"))')
kernels=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/srlm.log" | grep -o 'kernels="\?[a-z0-9-]*' | head -1 | cut -d= -f2 | tr -d '"')
{
    echo "model=$MODEL llama-cpp-python=$VERSION rounds=$ROUNDS levels=$LEVELS max_tokens=$MAX_TOKENS threads=$THREADS"
    echo "srlm=$(git describe --always --dirty) srlm_args='$SRLM_ARGS' srlm_weights='$weights' srlm_kernels='${kernels:-?}' cpu='$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)'"
    echo "llama.cpp flags: $(simd_flags)"
} | tee "$OUT/settings.txt"

# One level on one server: the bench's JSON for it.
bench() {
    local port=$1 c=$2 out=$3
    local requests=$((c < 4 ? 16 : 2 * c))
    "$SRLM" bench chat --url "http://127.0.0.1:$port" --concurrency "$c" --requests "$requests" --max-tokens "$MAX_TOKENS" \
        --temperature 0.7 --ignore-eos --out "$out" > /dev/null 2>&1
}
# Warm both (first requests page the weights in).
bench "$SRLM_PORT" 1 /dev/null; bench "$LLAMA_PORT" 1 /dev/null
for round in $(seq 1 "$ROUNDS"); do
    for c in $LEVELS; do
        bench "$SRLM_PORT" "$c" "$OUT/srlm.c$c.r$round.json"
        bench "$LLAMA_PORT" "$c" "$OUT/llama.c$c.r$round.json"
    done
done

python3 - "$OUT" "$ROUNDS" $LEVELS <<'EOF' | tee "$OUT/summary.md"
import json, statistics, sys
out, rounds, levels = sys.argv[1], int(sys.argv[2]), [int(c) for c in sys.argv[3:]]
def runs(side, c):
    return [json.load(open(f"{out}/{side}.c{c}.r{r}.json"))[0] for r in range(1, rounds + 1)]
print("| concurrency | srlm tok/s (rounds) | llama-server tok/s (rounds) | ratio (medians) | TTFT p50 s, srlm / llama-server |")
print("|---|---|---|---|---|")
for c in levels:
    s, l = runs("srlm", c), runs("llama", c)
    st, lt = [x["tokens_per_s"] for x in s], [x["tokens_per_s"] for x in l]
    sm, lm = statistics.median(st), statistics.median(lt)
    errors = sum(x["errors"] for x in s + l)
    ttft = f'{statistics.median(x["ttft_p50_s"] for x in s):.3f} / {statistics.median(x["ttft_p50_s"] for x in l):.3f}'
    note = f" ({errors} errors)" if errors else ""
    print(f"| {c} | {sm:.1f} ({', '.join(f'{x:.1f}' for x in st)}) | {lm:.1f} ({', '.join(f'{x:.1f}' for x in lt)}) | **{sm / lm:.2f}×**{note} | {ttft} |")
EOF
