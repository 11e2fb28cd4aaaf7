#!/usr/bin/env bash
# Measures the saga against the synchronous baseline, as BENCHMARKS.md reports it.
#
#   scripts/bench.sh [sqlite|postgres] [RATE] [DURATION]     defaults: sqlite 50 20
#
# `sqlite` is the default local stack (Tansu on SQLite, every service and the baseline on
# SQLite files); `postgres` is Tansu in memory with every service and the baseline on a
# Postgres server of the script's own (fsync on). For each data-platform mode (healthy,
# 100 ms slow, failing half its calls, down) it starts everything fresh: the stack as
# `shopctl up` runs it (release build) and `sync-facade` calling the same data-platform
# mock, then runs `shopctl bench` against the saga and then the baseline. JSON reports go
# to target/bench/<stack>-<system>-<mode>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=${1:-sqlite}
RATE=${2:-50}
DURATION=${3:-20}
BROKER_PORT=${BENCH_BROKER_PORT:-19092}
BASE=${BENCH_HTTP_PORT_BASE:-18080}
FACADE_PORT=$((BASE + 4))
MOCK="http://127.0.0.1:$((BASE + 10))"
OUT=target/bench
DATA=$(mktemp -d)
mkdir -p "$OUT"

case $STACK in
  sqlite) up_options=(--broker-storage sqlite) ;;
  postgres)
    export PRIVATE_PG_FSYNC=on
    # shellcheck source=private-postgres.sh
    source scripts/private-postgres.sh
    up_options=(--broker-storage memory --postgres "$TEST_DATABASE_URL") ;;
  *) echo "usage: scripts/bench.sh [sqlite|postgres] [RATE] [DURATION]" >&2; exit 2 ;;
esac

cargo build --release --bins

stop_systems() {
  [ -n "${UP:-}" ] && kill -INT "$UP" 2>/dev/null && wait "$UP" 2>/dev/null
  [ -n "${FACADE:-}" ] && kill "$FACADE" 2>/dev/null && wait "$FACADE" 2>/dev/null
  UP= FACADE=
  return 0
}
cleanup() {
  stop_systems
  rm -rf "$DATA"
  if [ "$STACK" = postgres ]; then stop_private_postgres; fi
}
trap cleanup EXIT

# Starts the stack and the baseline from nothing, for one mode.
start_systems() {
  local mode=$1 facade_db
  local prefix=()
  if [ "$STACK" = postgres ]; then
    prefix=(--postgres-prefix "bench_$mode")
    psql -q "$TEST_DATABASE_URL" -c "CREATE DATABASE facade_$mode" >/dev/null
    facade_db="${TEST_DATABASE_URL%/*}/facade_$mode"
  else
    facade_db="sqlite://$DATA/$mode/facade.db"
  fi
  mkdir -p "$DATA/$mode"
  target/release/shopctl up --no-build --data-dir "$DATA/$mode" --broker-port "$BROKER_PORT" \
    --http-port-base "$BASE" "${up_options[@]}" "${prefix[@]}" > "$DATA/$mode/up.log" 2>&1 &
  UP=$!
  until grep -q "the system is up" "$DATA/$mode/up.log"; do
    kill -0 "$UP" 2>/dev/null || { cat "$DATA/$mode/up.log"; exit 1; }
    sleep 1
  done
  HTTP_ADDR="127.0.0.1:$FACADE_PORT" DATABASE_URL="$facade_db" DATA_PLATFORM_URL="$MOCK" \
    RUST_LOG=warn target/release/sync-facade > "$DATA/$mode/facade.log" 2>&1 &
  FACADE=$!
  until curl -sf "http://127.0.0.1:$FACADE_PORT/health/ready" > /dev/null; do sleep 0.2; done
}

export KAFKA_BROKERS="127.0.0.1:$BROKER_PORT"
saga=(--order-url "http://127.0.0.1:$BASE" --product-url "http://127.0.0.1:$((BASE + 1))"
      --coupon-url "http://127.0.0.1:$((BASE + 2))")
facade=(--order-url "http://127.0.0.1:$FACADE_PORT" --product-url "http://127.0.0.1:$FACADE_PORT"
        --coupon-url "http://127.0.0.1:$FACADE_PORT" --target "http://127.0.0.1:$FACADE_PORT"
        --services sync-facade)
for mode in healthy slow100 failing50 down; do
  case $mode in
    healthy) settings='{"failure_rate": 0.0, "latency_ms": 0}' ;;
    slow100) settings='{"failure_rate": 0.0, "latency_ms": 100}' ;;
    failing50) settings='{"failure_rate": 0.5, "latency_ms": 0}' ;;
    down) settings='{"failure_rate": 1.0, "latency_ms": 0}' ;;
  esac
  start_systems "$mode"
  curl -sf -XPUT "$MOCK/v1/settings" -H 'content-type: application/json' -d "$settings" > /dev/null
  for system in saga facade; do
    echo "==> $STACK stack, $system, data platform $mode"
    declare -n args=$system
    target/release/shopctl bench "${args[@]}" --rate "$RATE" --duration "$DURATION" \
      --warmup 5 --coupon-share 0.2 --json "$OUT/$STACK-$system-$mode.json" | grep -v '^==>'
  done
  stop_systems
done
