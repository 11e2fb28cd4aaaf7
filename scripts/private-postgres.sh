# Sourced by scripts/test.sh: a Postgres server of the test run's own, so that the tests never
# touch the machine's cluster or anybody's databases. It lives in a temporary folder on a free
# port, trusts connections from 127.0.0.1, has the `shop` role (password `shop`, allowed to
# create databases), and is stopped and removed when the sourcing script exits.
#
# Sets TEST_DATABASE_URL, and PRIVATE_PG_RESTART, a command that restarts this server (the
# chaos run's database fault). PRIVATE_PG_FSYNC=on keeps fsync on (benchmarks); tests turn it
# off. `initdb` refuses to run as root, so as root the server runs as
# the `postgres` user.

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/saga-test-postgres.XXXXXX")
PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if [ "$(id -u)" = 0 ]; then
  chown postgres "$PG_DIR"
  PG_AS="runuser -u postgres --"
else
  PG_AS=""
fi

$PG_AS "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log"
# TLS, with a throwaway self-signed certificate, so that the tests can check that a
# DATABASE_URL with sslmode=require connects over TLS (TEST_DATABASE_TLS=1 says it is on).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
  -keyout "$PG_DIR/data/server.key" -out "$PG_DIR/data/server.crt" >/dev/null 2>&1
chmod 600 "$PG_DIR/data/server.key"
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR/data/server.key" "$PG_DIR/data/server.crt"
$PG_AS "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
  -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=500 -c fsync=${PRIVATE_PG_FSYNC:-off} -c ssl=on" \
  start >/dev/null
export TEST_DATABASE_TLS=1
stop_private_postgres() {
  $PG_AS "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap stop_private_postgres EXIT

psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE shop LOGIN PASSWORD 'shop' CREATEDB" >/dev/null
export TEST_DATABASE_URL="postgres://shop:shop@127.0.0.1:$PG_PORT/postgres"
export PRIVATE_PG_RESTART="$PG_AS $PG_BIN/pg_ctl -D $PG_DIR/data -l $PG_DIR/server.log -w -m fast restart"
echo "==> a Postgres server of this run's own: $TEST_DATABASE_URL (in $PG_DIR)"
