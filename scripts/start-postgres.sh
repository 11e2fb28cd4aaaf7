#!/usr/bin/env bash
# Starts a Postgres server of the project's own, for running the services on Postgres by hand
# (the tests start a throwaway one of theirs, scripts/private-postgres.sh). It is a cluster this
# script creates and nothing else uses: its data in .local/postgres/ of the checkout, on port
# ${SHOP_PG_PORT:-55432} of 127.0.0.1, with the role `shop` (password `shop`, allowed to create
# databases) that it made when it created the cluster. It never touches the machine's own
# cluster or any role there. Installs Debian's postgresql package if the binaries are missing
# (the only thing it needs root for). Safe to run again; stop it with
# `pg_ctl -D .local/postgres/data stop` (as the `postgres` user when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  bash scripts/install-postgres.sh
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
PG_DIR="$PWD/.local/postgres"
PG_PORT="${SHOP_PG_PORT:-55432}"
if [ "$(id -u)" = 0 ]; then
  PG_AS="runuser -u postgres --"
else
  PG_AS=""
fi

if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
  echo "==> creating a Postgres cluster of the project's own in $PG_DIR"
  mkdir -p "$PG_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  $PG_AS "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log"
  created=1
fi
if ! $PG_AS "$PG_BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
  echo "==> starting it on 127.0.0.1:$PG_PORT"
  $PG_AS "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=500" start >/dev/null
fi
if [ "${created:-0}" = 1 ]; then
  psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE shop LOGIN PASSWORD 'shop' CREATEDB" >/dev/null
fi
echo "==> Postgres is up: postgres://shop:shop@127.0.0.1:$PG_PORT/postgres"
