# Sourced by the benchmark scripts: starts and stops a fresh stack as `shopctl up` runs it,
# release build, on ports of its own so that a `shopctl up` of the user's is not disturbed.
#
#   bench_stack_setup STACK   STACK is one of
#       sqlite            the default: the broker on SQLite, every service on a SQLite file
#       memory-postgres   the broker in memory, every service on a Postgres server of the
#                         script's own (fsync on)
#       sqlite-postgres   the broker on SQLite, every service on that Postgres server
#       kafka-postgres    Apache Kafka (the compose version, one KRaft node), every service
#                         on that Postgres server
#   bench_stack_start NAME    a fresh stack in $BENCH_DATA/NAME (databases `bench_NAME_*`)
#   bench_stack_stop          stops it (Ctrl-C, as a person would)
#
# Sets BENCH_BROKERS, BENCH_BASE (the order service's port; product +1, coupon +2,
# forwarder +3, the data-platform mock +10) and BENCH_DATA, and cleans up on exit.

BENCH_BROKER_PORT=${BENCH_BROKER_PORT:-19092}
BENCH_BASE=${BENCH_HTTP_PORT_BASE:-18080}
BENCH_BROKERS="127.0.0.1:$BENCH_BROKER_PORT"
BENCH_MOCK="http://127.0.0.1:$((BENCH_BASE + 10))"
BENCH_DATA=$(mktemp -d)
BENCH_UP=

bench_stack_setup() {
  BENCH_STACK=$1
  case $BENCH_STACK in
    sqlite) bench_up_options=(--broker-storage sqlite) ;;
    memory-postgres | sqlite-postgres)
      export PRIVATE_PG_FSYNC=on
      # shellcheck source=../private-postgres.sh
      source "$(dirname "${BASH_SOURCE[0]}")/../private-postgres.sh"
      bench_up_options=(--broker-storage "${BENCH_STACK%-postgres}" --postgres "$TEST_DATABASE_URL") ;;
    kafka-postgres)
      export PRIVATE_PG_FSYNC=on
      # shellcheck source=../private-postgres.sh
      source "$(dirname "${BASH_SOURCE[0]}")/../private-postgres.sh"
      bash "$(dirname "${BASH_SOURCE[0]}")/../install-kafka.sh"
      bench_up_options=(--broker kafka --postgres "$TEST_DATABASE_URL") ;;
    *) echo "unknown stack $BENCH_STACK: sqlite, memory-postgres, sqlite-postgres or kafka-postgres" >&2; return 2 ;;
  esac
  trap bench_stack_cleanup EXIT
  # BENCH_NO_BUILD=1 measures target/release as it is (an A/B of the broker alone, say).
  if [ "${BENCH_NO_BUILD:-}" != 1 ]; then cargo build --release --bins; fi
}

bench_stack_start() {
  local name=$1 prefix=()
  mkdir -p "$BENCH_DATA/$name"
  if [ "$BENCH_STACK" != sqlite ]; then prefix=(--postgres-prefix "bench_${name//-/_}"); fi
  target/release/shopctl up --no-build --data-dir "$BENCH_DATA/$name" \
    --broker-port "$BENCH_BROKER_PORT" --http-port-base "$BENCH_BASE" \
    "${bench_up_options[@]}" "${prefix[@]}" > "$BENCH_DATA/$name/up.log" 2>&1 &
  BENCH_UP=$!
  # The bench creates its products and coupons, an operator's act: it takes the stack's token.
  BENCH_ADMIN_TOKEN_FILE="$BENCH_DATA/$name/admin-token"
  until grep -q "the system is up" "$BENCH_DATA/$name/up.log"; do
    kill -0 "$BENCH_UP" 2>/dev/null || { cat "$BENCH_DATA/$name/up.log"; return 1; }
    sleep 1
  done
}

bench_stack_stop() {
  if [ -n "$BENCH_UP" ]; then
    kill -INT "$BENCH_UP" 2>/dev/null && wait "$BENCH_UP" 2>/dev/null
  fi
  BENCH_UP=
  return 0
}

bench_stack_cleanup() {
  bench_stack_stop
  if declare -F bench_cleanup_more >/dev/null; then bench_cleanup_more; fi
  rm -rf "$BENCH_DATA"
  if declare -F stop_private_postgres >/dev/null; then stop_private_postgres; fi
}

# `shopctl bench` against the running stack, with the given flags.
bench_run() {
  # On a Postgres stack the report also gives each database's commits per order; on every
  # stack, the Kafka requests per order, read from each service's /metrics.
  local postgres=()
  if [ "$BENCH_STACK" != sqlite ]; then postgres=(--postgres "$TEST_DATABASE_URL"); fi
  ADMIN_TOKEN="$(cat "$BENCH_ADMIN_TOKEN_FILE")" KAFKA_BROKERS="$BENCH_BROKERS" \
    target/release/shopctl bench "${postgres[@]}" \
    --order-url "http://127.0.0.1:$BENCH_BASE" --product-url "http://127.0.0.1:$((BENCH_BASE + 1))" \
    --coupon-url "http://127.0.0.1:$((BENCH_BASE + 2))" \
    --forwarder-url "http://127.0.0.1:$((BENCH_BASE + 3))" "$@"
}
