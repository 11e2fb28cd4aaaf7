#!/usr/bin/env bash
# What the system costs while nobody orders: a fresh stack as `shopctl up` runs it (release
# build, every service and the console), left alone to settle, then the CPU of each of its
# processes over a window, as a percentage of one core.
#
#   scripts/bench-idle.sh [STACK] [SECONDS]
#
# STACK is one of scripts/lib/bench-stack.sh's stacks (default sqlite, the default stack);
# SECONDS is the measured window (default 30), after 15 s of settling. BENCH_NO_BUILD=1 uses
# target/release as it is. Prints one line per process and the total.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:-sqlite}
seconds=${2:-30}
# shellcheck source=lib/bench-stack.sh
source scripts/lib/bench-stack.sh
bench_stack_setup "$stack"
bench_stack_start idle
sleep 15

# Every process under `shopctl up`, with a name: the program, and `console` for the shopctl
# that serves the web console.
descendants() {
  local pid
  for pid in $(ps -o pid= --ppid "$1"); do
    echo "$pid"
    descendants "$pid"
  done
}
name_of() {
  local comm
  comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  if [ "$comm" = shopctl ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -q ' console'; then
    echo console
  elif [ "$comm" = java ]; then
    echo kafka
  else
    echo "$comm"
  fi
}
ticks_of() { # utime + stime of a process, in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

declare -A before name
pids=$(descendants "$BENCH_UP")
for pid in $pids; do
  name[$pid]=$(name_of "$pid") || continue
  before[$pid]=$(ticks_of "$pid")
done
sleep "$seconds"
hz=$(getconf CLK_TCK)
total=0
lines=()
for pid in $pids; do
  [ -n "${name[$pid]:-}" ] || continue
  used=$(( $(ticks_of "$pid") - before[$pid] ))
  total=$((total + used))
  lines+=("$(awk -v n="${name[$pid]}" -v t="$used" -v hz="$hz" -v s="$seconds" \
    'BEGIN { printf "  %-20s %5.1f %% of a core", n, 100 * t / hz / s }')")
done
echo "idle CPU over ${seconds} s, $stack stack, commit $(git rev-parse --short HEAD):"
printf '%s\n' "${lines[@]}" | sort
awk -v t="$total" -v hz="$hz" -v s="$seconds" \
  'BEGIN { printf "  %-20s %5.1f %% of a core\n", "total", 100 * t / hz / s }'
bench_stack_stop
