#!/usr/bin/env bash
# Starts the machine's Postgres (installing it if missing) and makes sure the role the
# services use exists: `shop` with password `shop`, allowed to create databases. For running
# services on Postgres by hand; the tests start a server of their own (scripts/test.sh).
# Safe to run again. Needs root (or sudo) for apt-get and pg_ctlcluster.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  bash "$(dirname "$0")/install-postgres.sh"
fi

read -r version cluster _ <<<"$(pg_lsclusters -h | head -n1)"
if ! pg_lsclusters -h | head -n1 | grep -q online; then
  echo "==> starting Postgres $version/$cluster"
  as_root pg_ctlcluster "$version" "$cluster" start
fi

for _ in $(seq 1 50); do
  as_root su postgres -c "pg_isready -q" && break
  sleep 0.2
done

as_root su postgres -c "psql -q -v ON_ERROR_STOP=1" <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop') THEN
    CREATE ROLE shop LOGIN PASSWORD 'shop' CREATEDB;
  ELSE
    ALTER ROLE shop LOGIN PASSWORD 'shop' CREATEDB;
  END IF;
END
$$;
SQL
echo "==> Postgres is up: postgres://shop:shop@127.0.0.1:5432/postgres"
