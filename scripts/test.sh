#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against a real Postgres
# and the real default model on both engines, native and mistralrs (including the
# official OpenAI Python SDK).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/srlm_test"
scripts/fetch-model.sh
scripts/postgres.sh srlm_test
# Charts draw their text with a system font (the PNG and SVG chart tests).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null; }
# The trainer's matrix products run on OpenBLAS where it is installed (train::fast::blas):
# install it, so that the trainer tests cover that path (without it they cover the gemm crate's).
ldconfig -p | grep -c 'libopenblas\.so\.0' >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null; }
python3 -c 'import openai' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'openai>=1.40'
# vendor/mistralrs-core is crates.io's 0.8.1 plus vendor/patches/ and nothing else.
scripts/vendor.sh --check
# The tree is formatted as rustfmt.toml says (where rustfmt is installed).
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; fi
# Unit tests, engine tests, and the HTTP suite on the native engine (the CPU default)…
cargo test --release "$@"
# …then the HTTP suite again on mistralrs: every endpoint must work with either engine
# (the engine, trainer, swap and loop tests don't depend on the server's engine: run once).
SRLM_TEST_ENGINE=mistralrs cargo test --release --test integration "$@" -- --skip engines:: --skip train:: --skip swap:: --skip selfloop::
# A short schema-driven fuzzing run: the spec must describe what the server answers.
FUZZ_TIMEOUT=600 load-tests/fuzz.sh 10
