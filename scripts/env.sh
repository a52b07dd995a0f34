# Shared settings for the scripts (sourced, not run).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/srlm-target}"
# Queries are checked against .sqlx/ (committed), so builds need no database.
export SQLX_OFFLINE=true
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/srlm}"
