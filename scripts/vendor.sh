#!/usr/bin/env bash
# vendor/mistralrs-core: mistralrs-core 0.8.1 exactly as crates.io serves it, plus the patches
# in vendor/patches/ (Cargo.toml's [patch.crates-io] builds srlm against it).
#
#   scripts/vendor.sh          # write vendor/mistralrs-core afresh from the .crate and the patches
#   scripts/vendor.sh --check  # exit 1 unless vendor/mistralrs-core is exactly that
#
# The .crate is checked against the sha256 that Cargo.lock recorded for crates.io's 0.8.1, so
# what is vendored can be audited as "that release + these diffs" and nothing else.
set -euo pipefail

CRATE=mistralrs-core
VERSION=0.8.1
SHA256=a2b8b9e5c94491d9ceeded3a30291cb6af6ae74810a5776dd55e3bbb8b3429d4

CHECK=0
case "${1:-}" in
  --check) CHECK=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT_DIR"
dest="vendor/$CRATE"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

file="$CRATE-$VERSION.crate"
curl -sSfL --retry 3 -o "$tmp/$file" "https://static.crates.io/crates/$CRATE/$file"
echo "$SHA256  $tmp/$file" | sha256sum -c --quiet -
tar -xzf "$tmp/$file" -C "$tmp"
tree="$tmp/$CRATE-$VERSION"
for p in vendor/patches/"$CRATE-$VERSION"-*.patch; do
  patch -s -p1 -d "$tree" --no-backup-if-mismatch <"$p"
done

if ((CHECK)); then
  if diff -r "$tree" "$dest" >"$tmp/diff"; then
    echo "$dest = $CRATE $VERSION (crates.io, sha256 checked) + $(ls vendor/patches/"$CRATE-$VERSION"-*.patch | wc -l) patch(es)"
  else
    echo "$dest differs from $CRATE $VERSION + vendor/patches (rerun scripts/vendor.sh):" >&2
    head -40 "$tmp/diff" >&2
    exit 1
  fi
else
  rm -rf "$dest"
  mv "$tree" "$dest"
  echo "wrote $dest"
fi
