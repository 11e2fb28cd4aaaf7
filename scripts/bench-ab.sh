#!/usr/bin/env bash
# Compares two builds of the system in one sitting, as BENCHMARKS.md asks on a noisy machine:
# fresh 100 orders/s for 20 s on memory-postgres, alternating the two, ROUNDS times.
#
#   scripts/bench-ab.sh OTHER_TREE [ROUNDS]
#
# OTHER_TREE is another checkout (`git worktree add /tmp/old <commit>`) whose target/release
# holds its release build. Reports go to target/bench/ab-{this,other}-<round>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
other=$(cd "${1:?usage: scripts/bench-ab.sh OTHER_TREE [ROUNDS]}" && pwd)
rounds=${2:-2}
out="$PWD/target/bench"
mkdir -p "$out"
one() { # tree, report
  (
    cd "$1"
    # shellcheck source=lib/bench-stack.sh
    source scripts/lib/bench-stack.sh
    bench_stack_setup memory-postgres
    bench_stack_start ab
    bench_run --rate 100 --duration 20 --warmup 5 --json "$2"
  )
}
for round in $(seq 1 "$rounds"); do
  one "$other" "$out/ab-other-$round.json"
  one "$PWD" "$out/ab-this-$round.json"
done
