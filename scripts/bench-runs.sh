#!/usr/bin/env bash
# The saga's own figures in BENCHMARKS.md, each on a fresh stack (release build):
#
#   scripts/bench-runs.sh sweep STACK [FROM]   `bench --sweep` from FROM orders/s (default
#                                              100), ×1.5 a step until it no longer keeps up
#   scripts/bench-runs.sh history STACK        100/s for 20 s, 200 s more (20,000 orders of
#                                              history), then 20 s again
#   scripts/bench-runs.sh backlog STACK        100/s for 5 minutes with the analytics
#                                              forwarder paused (SIGSTOP), then how long it
#                                              takes to deliver the backlog once resumed
#
# STACK: sqlite, memory-postgres, sqlite-postgres or kafka-postgres (scripts/lib/bench-stack.sh). JSON
# reports go to target/bench/<run>-<stack>*.json; `shopctl plot` draws them.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: scripts/bench-runs.sh sweep|history|backlog STACK}
STACK=${2:?usage: scripts/bench-runs.sh sweep|history|backlog STACK}
OUT=target/bench
mkdir -p "$OUT"
# shellcheck source=lib/bench-stack.sh
source scripts/lib/bench-stack.sh
bench_stack_setup "$STACK"
bench_stack_start "$RUN"

# How many events the data-platform mock has kept.
kept() {
  local n
  n=$(curl -sf "$BENCH_MOCK/metrics" | sed -n 's/^received_total{outcome="kept"} //p' | head -n1)
  echo "${n:-0}"
}

case $RUN in
  sweep)
    bench_run --sweep --rate "${3:-100}" --duration 20 --warmup 5 --drain 20 \
      --json "$OUT/sweep-$STACK.json" ;;
  history)
    bench_run --rate 100 --duration 20 --warmup 5 --json "$OUT/history-$STACK-fresh.json"
    bench_run --rate 100 --duration 200 --warmup 0 --json "$OUT/history-$STACK-middle.json"
    bench_run --rate 100 --duration 20 --warmup 0 --json "$OUT/history-$STACK-after.json" ;;
  backlog)
    forwarder=$(pgrep -f "$PWD/target/release/analytics-forwarder" | head -n1)
    kill -STOP "$forwarder"
    echo "==> the analytics forwarder ($forwarder) is paused for the run"
    bench_run --rate 100 --duration 300 --warmup 0 --drain 30 --json "$OUT/backlog-$STACK.json"
    # Every confirmed or cancelled order is two order events, each one delivery.
    want=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))["runs"][0]; print(2 * (r["confirmed"] + r["cancelled"]))' "$OUT/backlog-$STACK.json")
    have=$(kept)
    echo "==> resuming the forwarder: $have of $want deliveries made so far"
    start=$(date +%s%N)
    elapsed_ms() { echo $(( ($(date +%s%N) - start) / 1000000 )); }
    kill -CONT "$forwarder"
    while [ "$(kept)" -lt "$want" ]; do
      if [ "$(elapsed_ms)" -gt 600000 ]; then
        echo "==> not caught up after 10 minutes: $(kept) of $want" >&2; exit 1
      fi
      sleep 0.2
    done
    took=$(elapsed_ms)
    echo "==> caught up: $want deliveries in $took ms after the forwarder resumed"
    printf '{"stack": "%s", "deliveries": %s, "catch_up_ms": %s}\n' "$STACK" "$want" "$took" \
      > "$OUT/backlog-$STACK-catch-up.json" ;;
  *) echo "unknown run $RUN: sweep, history or backlog" >&2; exit 2 ;;
esac
