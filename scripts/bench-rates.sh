#!/usr/bin/env bash
# The saga over the rates people try first, each on a fresh stack (release build): 20 s at each
# rate after 5 s of warm-up, a coupon on one order in five, then one markdown row per rate (its
# commits per order are every service's database together).
#
#   scripts/bench-rates.sh STACK [RATE...]      (rates default to 25 50 100 200)
#
# STACK is one of scripts/lib/bench-stack.sh's stacks. Reports go to
# target/bench/rates-<stack>-<rate>.json. The environment reaches every process `shopctl up`
# starts, so an A/B of a setting or of the broker in one sitting is two calls:
#   SAGA_BROKER=/path/to/other/saga-broker scripts/bench-rates.sh sqlite 50
#   scripts/bench-rates.sh sqlite 50
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:?usage: scripts/bench-rates.sh STACK [RATE...]}
shift
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(25 50 100 200)
out=target/bench
mkdir -p "$out"
# shellcheck source=lib/bench-stack.sh
source scripts/lib/bench-stack.sh
bench_stack_setup "$stack"
export BENCH_NO_BUILD=1
for rate in "${rates[@]}"; do
  bench_stack_start "rates-$rate"
  bench_run --rate "$rate" --duration 20 --warmup 5 --coupon-share 0.2 \
    --json "$out/rates-$stack-$rate.json" > /dev/null
  bench_stack_stop
done
echo "| rate | confirmed | saga p50 / p99 (ms) | POST p50 / p99 (ms) | broker CPU per order | our services' CPU per order | Produce / Fetch requests per order | commits per order |"
echo "|---|---|---|---|---|---|---|---|"
for rate in "${rates[@]}"; do
  python3 - "$out/rates-$stack-$rate.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))["runs"][0]
cpu = run["cpu_ms_per_confirmed"]
requests = run.get("kafka_requests_per_confirmed", {})
commits = sum(run.get("db_commits_per_confirmed", {}).values())
failures = ", ".join(f"{n} × {status}" for status, n in run.get("failures", {}).items())
print(f"| {run['rate']:g}/s | {run['confirmed']:,} of {run['sent']:,}"
      f"{f' (failed: {failures})' if failures else ''} "
      f"| {run['saga_ms']['p50']:.0f} / {run['saga_ms']['p99']:.0f} "
      f"| {run['post_ms']['p50']:.1f} / {run['post_ms']['p99']:.1f} "
      f"| {cpu.get('broker', 0):.1f} ms | {run['services_cpu_ms_per_confirmed']:.1f} ms "
      f"| {requests.get('Produce', 0):.2f} / {requests.get('Fetch', 0):.2f} "
      f"| {commits:.2f} |")
PY
done
