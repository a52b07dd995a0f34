#!/usr/bin/env bash
# Makes sure a Postgres answers at 127.0.0.1:5432 and that the database named in
# DATABASE_URL (default: srlm) exists. Installs and starts Debian's PostgreSQL on a
# machine that has none. Migrations are applied by `srlm serve` and by the tests.
set -euo pipefail

PGHOST=127.0.0.1 PGPORT=5432 PGUSER=postgres
export PGHOST PGPORT PGUSER
DB="${1:-srlm}"

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "installing PostgreSQL" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if ! pg_isready -q; then
    version=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do pg_isready -q && break; sleep 1; done
fi
pg_isready -q || { echo "Postgres did not come up at $PGHOST:$PGPORT" >&2; exit 1; }
# A fresh Debian cluster only lets the postgres OS user in; trust local TCP like CI does.
if ! psql -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    hba=$(su postgres -c "psql -tAc 'SHOW hba_file'")
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    su postgres -c "psql -tAc 'SELECT pg_reload_conf()'" >/dev/null
fi
if [ "$(psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    createdb "$DB"
fi
