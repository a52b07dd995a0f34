#!/usr/bin/env bash
# Packs what the GPU check (scripts/gpu/check.sh) needs on a bare GPU machine (no Rust,
# no network, no Postgres) into .gpu/, which .git/info/exclude keeps out of git and the
# device call carries (`carry: [".gpu"]`):
#   .gpu/srlm.xz       srlm built with --features cuda, stripped, xz-compressed (Python's
#                      standard lzma module unpacks it there: no zstd needed)
#   .gpu/tokenizer/    the default model's tokenizer (tokenizer.json, tokenizer_config.json
#                      with its chat template), made from its GGUF (scripts/fetch-model.sh)
#   .gpu/pg.tar.xz     PostgreSQL 16 from the pgserver wheel (PyPI), trimmed to the server,
#                      initdb, pg_ctl, psql and their libraries and data
# Prints the sizes and fails if .gpu/ is over 60 MiB (a call carries 64 MiB with the tree).
#
#   scripts/gpu/pack.sh [BINARY]
# BINARY: the CUDA srlm, plain, .zst or .xz (default: $SRLM_CUDA_BINARY, else
# scripts/build-cuda.sh's ~/.cache/srlm-target-cuda/dist/srlm-cuda13-sm90, else a
# .gpu/srlm.xz or .gpu/srlm.zst already there). XZ_OPT sets xz's options (default -9 -T0).
set -euo pipefail
cd "$(dirname "$0")/../.."
LIMIT_MIB=60
PGSERVER=pgserver==0.1.4
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/srlm-gpu-pack"

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" .gpu "$CACHE"
grep -qxF '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
git check-ignore -q .gpu/x || { echo "pack: .gpu/ is not ignored by git" >&2; exit 1; }

# --- the binary ----------------------------------------------------------------------
src="${1:-${SRLM_CUDA_BINARY:-}}"
if [ -z "$src" ]; then
    # scripts/build-cuda.sh's output (stripped), else what an earlier pack left.
    for c in "$HOME"/.cache/srlm-target-cuda/dist/srlm-cuda13-sm90 .gpu/srlm.xz .gpu/srlm.zst; do
        [ -f "$c" ] && { src=$c; break; }
    done
fi
[ -n "$src" ] && [ -f "$src" ] || { echo "pack: no srlm binary given (argument, SRLM_CUDA_BINARY, or .gpu/srlm.xz)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case "$src" in
*.xz)
    xz -t "$src"
    if ! [ "$src" -ef .gpu/srlm.xz ]; then cp "$src" .gpu/srlm.xz.part && mv .gpu/srlm.xz.part .gpu/srlm.xz; fi
    ;;
*)
    if [[ "$src" == *.zst ]]; then
        if command -v zstd >/dev/null; then
            zstd -d -q -f "$src" -o "$tmp/srlm"
        else
            python3 -c 'import sys, zstandard; zstandard.ZstdDecompressor().copy_stream(open(sys.argv[1], "rb"), open(sys.argv[2], "wb"))' "$src" "$tmp/srlm" ||
                { echo "pack: $src needs zstd (apt-get install zstd)" >&2; exit 1; }
        fi
    else
        cp "$src" "$tmp/srlm"
    fi
    head -c 4 "$tmp/srlm" | grep -q 'ELF' || { echo "pack: $src is not an ELF binary" >&2; exit 1; }
    command -v strip >/dev/null && strip --strip-all "$tmp/srlm" 2>/dev/null || true
    echo "pack: compressing srlm ($(( $(stat -c %s "$tmp/srlm") / 1048576 )) MiB) with xz ${XZ_OPT:--9 -T0}"
    XZ_OPT="${XZ_OPT:--9 -T0}" xz -c "$tmp/srlm" >.gpu/srlm.xz.part
    mv .gpu/srlm.xz.part .gpu/srlm.xz
    ;;
esac
rm -f .gpu/srlm.zst .gpu/srlm
if command -v readelf >/dev/null; then
    xz -dc .gpu/srlm.xz >"$tmp/srlm.check"
    if readelf -d "$tmp/srlm.check" | grep -q 'libcuda\.so'; then
        echo "pack: srlm links $(readelf -d "$tmp/srlm.check" | awk '/NEEDED/ {print $NF}' | tr -d '[]' | grep -E 'cu|nvrtc' | tr '\n' ' ')"
    else
        echo "pack: WARNING: .gpu/srlm.xz is not a CUDA build (no libcuda.so.1 among its libraries): on the GPU it will serve on the CPU" >&2
    fi
    rm -f "$tmp/srlm.check"
fi

# --- the tokenizer -------------------------------------------------------------------
if [ ! -f .gpu/tokenizer/tokenizer.json ]; then
    scripts/fetch-model.sh
    python3 scripts/gpu/tokenizer_from_gguf.py models/SmolLM2-135M-Instruct.Q4_1.gguf .gpu/tokenizer.part
    rm -rf .gpu/tokenizer && mv .gpu/tokenizer.part .gpu/tokenizer
fi

# --- PostgreSQL ----------------------------------------------------------------------
if [ ! -f .gpu/pg.tar.xz ]; then
    ls "$CACHE"/pgserver-*.whl >/dev/null 2>&1 ||
        python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$CACHE" "$PGSERVER"
    # Unzip keeping the executable bits; the binaries find libpq at ../../../pgserver.libs.
    python3 - "$CACHE" "$tmp/pg" <<'PY'
import glob, os, sys, zipfile
wheel = sorted(glob.glob(sys.argv[1] + "/pgserver-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.startswith(("pgserver/pginstall/", "pgserver.libs/")):
            continue
        path = z.extract(info, sys.argv[2])
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode)
PY
    pg="$tmp/pg/pgserver/pginstall"
    rm -rf "$pg/include" "$pg/lib/pkgconfig" "$pg"/lib/*.a
    for f in "$pg"/bin/*; do
        case "$(basename "$f")" in postgres | initdb | pg_ctl | psql | pg_isready | createdb) ;; *) rm -f "$f" ;; esac
    done
    tar -C "$tmp/pg" -cf - pgserver pgserver.libs | XZ_OPT="-9 -T0" xz -c >.gpu/pg.tar.xz.part
    mv .gpu/pg.tar.xz.part .gpu/pg.tar.xz
fi

# --- sizes ---------------------------------------------------------------------------
du -ab .gpu | sort -n | awk '$1 > 65536 { printf "%8.2f MiB  %s\n", $1 / 1048576, $2 }'
total=$(du -sb .gpu | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
awk -v g="$total" -v t="$tree" 'BEGIN { printf "pack: .gpu/ %.2f MiB; working tree %.2f MiB; together %.2f MiB of the 64 MiB a call carries\n", g / 1048576, t / 1048576, (g + t) / 1048576 }'
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "pack: .gpu/ is over $LIMIT_MIB MiB" >&2
    exit 1
fi
