#!/usr/bin/env bash
# Measures the saga against the synchronous baseline, as BENCHMARKS.md reports it.
#
#   scripts/bench.sh [STACK] [RATE] [DURATION]     defaults: sqlite 50 20
#
# STACK is `sqlite` (the default local stack: the broker on SQLite, every service and the
# baseline on SQLite files), `memory-postgres` (alias `postgres`), `sqlite-postgres` (the
# broker in memory or on SQLite) or `kafka-postgres` (Apache Kafka), every service and the
# baseline on a Postgres server of the
# script's own, fsync on). For each data-platform mode (healthy, 100 ms slow, failing half
# its calls, down) it starts everything fresh: the stack as `shopctl up` runs it (release
# build) and `sync-facade` calling the same data-platform mock, then runs `shopctl bench`
# against the saga and then the baseline. JSON reports go to
# target/bench/<stack>-<system>-<mode>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=${1:-sqlite}
[ "$STACK" = postgres ] && STACK=memory-postgres
RATE=${2:-50}
DURATION=${3:-20}
OUT=target/bench
mkdir -p "$OUT"
# shellcheck source=lib/bench-stack.sh
source scripts/lib/bench-stack.sh
FACADE_PORT=$((BENCH_BASE + 4))
FACADE=
bench_cleanup_more() {
  [ -n "$FACADE" ] && kill "$FACADE" 2>/dev/null && wait "$FACADE" 2>/dev/null
  FACADE=
  return 0
}
bench_stack_setup "$STACK"

# The stack and the baseline from nothing, for one mode.
start_systems() {
  local mode=$1 facade_db
  bench_stack_start "$mode"
  if [ "$STACK" = sqlite ]; then
    facade_db="sqlite://$BENCH_DATA/$mode/facade.db"
  else
    psql -q "$TEST_DATABASE_URL" -c "CREATE DATABASE facade_$mode" >/dev/null
    facade_db="${TEST_DATABASE_URL%/*}/facade_$mode"
  fi
  HTTP_ADDR="127.0.0.1:$FACADE_PORT" DATABASE_URL="$facade_db" DATA_PLATFORM_URL="$BENCH_MOCK" \
    RUST_LOG=warn target/release/sync-facade > "$BENCH_DATA/$mode/facade.log" 2>&1 &
  FACADE=$!
  until curl -sf "http://127.0.0.1:$FACADE_PORT/health/ready" > /dev/null; do sleep 0.2; done
}

saga=()
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
  curl -sf -XPUT "$BENCH_MOCK/v1/settings" -H 'content-type: application/json' -d "$settings" > /dev/null
  for system in saga facade; do
    echo "==> $STACK stack, $system, data platform $mode"
    declare -n args=$system
    # Later flags win, so the baseline's URLs replace the saga's.
    bench_run "${args[@]}" --rate "$RATE" --duration "$DURATION" \
      --warmup 5 --coupon-share 0.2 --json "$OUT/$STACK-$system-$mode.json" | grep -v '^==>'
  done
  bench_cleanup_more
  bench_stack_stop
done
