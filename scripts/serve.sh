#!/usr/bin/env bash
# Brings up everything and serves the default model on http://127.0.0.1:8080
# (Swagger UI at /docs). Extra arguments go to `srlm serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/fetch-model.sh
scripts/postgres.sh srlm
exec cargo run --release --bin srlm -- serve "$@"
