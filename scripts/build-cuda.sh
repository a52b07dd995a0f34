#!/usr/bin/env bash
# Build `srlm` with `--features cuda` on a machine without a GPU or NVIDIA driver.
#
#   scripts/build-cuda.sh [COMPUTE_CAP]      # default 90 (H100/H200)
#   scripts/build-cuda.sh --setup-only [CAP] # only install/check the CUDA toolchain
#
# Toolchain: CUDA 13.0 from NVIDIA's PyPI wheels (nvcc, headers, cudart, cuBLAS, cuRAND, NVRTC),
# installed with `pip install --target` into $SRLM_CUDA13 (default ~/.cache/cuda13/py) and
# assembled into a CUDA_ROOT-style tree at ~/.cache/cuda13/root (bin/ include/ nvvm/ lib64/,
# all symlinks). CUDA 13.0 because the GPU box runs driver 580 and torch's CUDA 13.0 libraries;
# a binary linked against CUDA 12 sonames would not load there.
#
# libcuda: there is no driver here, and none of NVIDIA's PyPI wheels ships the driver stub
# (lib/stubs/libcuda.so is only in the full toolkit installers and conda's cuda-driver-dev). So
# this script generates a link-time stub: every cu* entry point declared in the wheel's own
# cuda.h (13.0, with and without the _v2/_ptds/_ptsz aliases) plus cuProfiler*, each returning
# CUDA_ERROR_STUB_LIBRARY (34), built into root/lib64/stubs/libcuda.so with SONAME libcuda.so.1.
# The binary therefore records NEEDED libcuda.so.1 and the real driver's library is used at run
# time. The stub is never on a run-time search path (only LIBRARY_PATH and -L).
#
# Run time on the GPU box: the binary needs these sonames (printed at the end):
#   libcuda.so.1 (driver), libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
#   libcurand.so.10, libnvrtc.so.13 (+ libnvrtc-builtins.so.13.0, dlopened by NVRTC)
# No rpath is set; point LD_LIBRARY_PATH at the CUDA 13 libraries, e.g. torch's wheels:
#   export LD_LIBRARY_PATH="$(python3 -c 'import nvidia, os; p = nvidia.__path__[0];
#     print(":".join(os.path.join(p, d, "lib") for d in sorted(os.listdir(p))
#     if os.path.isdir(os.path.join(p, d, "lib"))))')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# (newer wheels put everything in nvidia/cu13/lib, older ones in nvidia/<component>/lib).
#
# Uses its own target dir ($HOME/.cache/srlm-target-cuda), never the CPU one.
# Kernels: cudaforge (candle-kernels, mistralrs-quant, mistralrs-paged-attn) turns
# CUDA_COMPUTE_CAP=90 into sm_90a/compute_90a (cubins and PTX), which loads only on CC 9.0
# (H100/H200). The binary needs glibc >= 2.35 on the GPU box (built on Debian 12, glibc 2.36).
set -euo pipefail

SETUP_ONLY=0
if [[ "${1:-}" == "--setup-only" ]]; then SETUP_ONLY=1; shift; fi
CAP="${1:-90}"
[[ "$CAP" =~ ^[0-9]+[a-z]?$ ]] || { echo "bad compute capability: $CAP" >&2; exit 2; }

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"
export CARGO_TARGET_DIR="$HOME/.cache/srlm-target-cuda"
# shellcheck source=env.sh
source scripts/env.sh
export CARGO_TARGET_DIR="$HOME/.cache/srlm-target-cuda" # env.sh must not switch it back

CUDA13="${SRLM_CUDA13:-$HOME/.cache/cuda13}"
PYDIR="$CUDA13/py"
CU="$PYDIR/nvidia/cu13"
CROOT="$CUDA13/root"
# CUDA 13.0.x (13.0 Update 2), matching torch 2.11+cu130's runtime wheels.
PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
)

setup_toolchain() {
  local stamp="$CUDA13/.pins" want
  want="$(printf '%s\n' "${PINS[@]}")"
  if [[ ! -x "$CU/bin/nvcc" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo ">> installing CUDA 13.0 wheels into $PYDIR"
    rm -rf "$PYDIR" "$CROOT" "$stamp"
    mkdir -p "$CUDA13"
    python3 -m pip install --disable-pip-version-check --root-user-action=ignore --no-deps -q --target "$PYDIR" "${PINS[@]}"
    printf '%s\n' "$want" >"$stamp"
  fi

  # CUDA_ROOT-style tree: nvcc and cudaforge derive include/ and lib64/ from bin/.., cudarc
  # searches $CUDA_ROOT/lib64 and lib64/stubs.
  # bin/ is a real directory of links so that nvcc's $(_HERE_)/.. (nvcc.profile) is this tree.
  [[ -L "$CROOT/bin" ]] && rm "$CROOT/bin"
  mkdir -p "$CROOT/bin" "$CROOT/lib64/stubs"
  local d f
  for f in "$CU"/bin/*; do ln -sfn "$f" "$CROOT/bin/$(basename "$f")"; done
  for d in include nvvm; do ln -sfn "$CU/$d" "$CROOT/$d"; done
  for f in "$CU"/lib/lib*.so.* "$CU"/lib/lib*.a; do
    local base; base="$(basename "$f")"
    ln -sfn "$f" "$CROOT/lib64/$base"
    case "$base" in
      lib*.alt.so.*|libnvrtc-builtins*) ;;
      lib*.so.*) ln -sfn "$base" "$CROOT/lib64/${base%%.so.*}.so" ;;
    esac
  done

  local stub="$CROOT/lib64/stubs/libcuda.so"
  if [[ ! -f "$stub" || "$CU/include/cuda.h" -nt "$stub" ]]; then
    echo ">> generating link-time stub $stub"
    local tmp; tmp="$(mktemp -d)"
    syms() {
      printf '#include <cuda.h>\n' | gcc -E -P -I"$CU/include" "$@" - |
        grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | sed 's/[[:space:]]*(//'
    }
    { syms; syms -D__CUDA_API_VERSION_INTERNAL; syms -DCUDA_API_PER_THREAD_DEFAULT_STREAM
      printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop; } | sort -u >"$tmp/syms"
    [[ $(wc -l <"$tmp/syms") -gt 400 ]] || { echo "stub: too few symbols from cuda.h" >&2; exit 1; }
    { echo '/* Link-time stub of the CUDA driver API; never load this at run time. */'
      while read -r s; do echo "int $s(void) { return 34; /* CUDA_ERROR_STUB_LIBRARY */ }"; done <"$tmp/syms"
    } >"$tmp/stub.c"
    gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$stub" "$tmp/stub.c"
    echo "   $(wc -l <"$tmp/syms") symbols"
    rm -rf "$tmp"
  fi
}

setup_toolchain

export CUDA_ROOT="$CROOT" CUDA_PATH="$CROOT" CUDA_HOME="$CROOT" CUDA_TOOLKIT_ROOT_DIR="$CROOT"
export PATH="$CROOT/bin:$PATH"
export LIBRARY_PATH="$CROOT/lib64:$CROOT/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
# cudaforge (candle-kernels, mistralrs-quant, mistralrs-paged-attn) would ask nvidia-smi.
export CUDA_COMPUTE_CAP="$CAP"
# Pin cudarc's CUDA API level rather than parsing `nvcc --version` (same answer: 13.0).
export CUDARC_CUDA_VERSION=13000
export SQLX_OFFLINE=true

nvcc --version | tail -2
if ((SETUP_ONLY)); then
  echo "toolchain ready: CUDA_ROOT=$CROOT CUDA_COMPUTE_CAP=$CAP"
  exit 0
fi

echo ">> cargo build --release --features cuda --bin srlm (sm_$CAP, target dir $CARGO_TARGET_DIR)"
start=$(date +%s)
cargo build --release --features cuda --bin srlm
secs=$(( $(date +%s) - start ))

bin="$CARGO_TARGET_DIR/release/srlm"
dist="$CARGO_TARGET_DIR/dist"
mkdir -p "$dist"
out="$dist/srlm-cuda13-sm$CAP"
strip -o "$out" "$bin"
if command -v zstd >/dev/null; then
  zstd -q -f -19 -T0 "$out" -o "$out.zst"; packed="$out.zst"
else
  xz -k -f -9 -T0 "$out"; packed="$out.xz"
fi

printf 'build time: %dm%02ds\n' $((secs / 60)) $((secs % 60))
printf 'binary (unstripped): %s bytes\n' "$(stat -c %s "$bin")"
printf 'binary (stripped):   %s bytes  %s\n' "$(stat -c %s "$out")" "$out"
printf 'compressed:          %s bytes  %s\n' "$(stat -c %s "$packed")" "$packed"
echo "NEEDED (provide libcuda.so.1 from the driver and the CUDA 13 libs via LD_LIBRARY_PATH):"
readelf -d "$out" | awk '/NEEDED/ {print "  " $NF}' | tr -d '[]'
