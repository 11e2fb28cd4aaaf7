#!/usr/bin/env bash
# How long a newcomer's first run takes: a fresh clone of HEAD in a temporary folder, with an
# empty target folder and an empty cache folder (so that saga-broker is built too), running the
# README's first command until it prints "the system is up". The crates are taken from
# cargo's download cache when they are there, as on a machine that fetched them before;
# nothing else is reused.
#
#   scripts/bench-first-run.sh
#
# Takes as long as it measures (about 18 minutes on 2 cores) and keeps both cores busy: run it
# on an otherwise idle machine. Prints each phase as cargo reports it, then the time from the
# command to "the system is up". The clone is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/saga-first-run.XXXXXX")
log="$work/up.log"
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

git clone -q . "$work/clone"
# Ports of its own, so that a `shopctl up` of the user's is not disturbed.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
broker_port=$(free_port)
http_base=$(( ($(free_port) % 20000) + 30000 ))

cd "$work/clone"
start=$(date +%s)
# The environment a newcomer has: no target folder, no broker in the cache.
env -u CARGO_TARGET_DIR -u SAGA_BROKER XDG_CACHE_HOME="$work/cache" \
  cargo run --release -p shopctl -- up --seed-demo \
  --broker-port "$broker_port" --http-port-base "$http_base" >"$log" 2>&1 &
pid=$!
until grep -q "the system is up" "$log"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 30 "$log" >&2
    echo "shopctl up ended before the system was up" >&2
    exit 1
  fi
  sleep 1
done
end=$(date +%s)

grep -E '^(==>|    Finished)' "$log" | grep -v "the system is up"
elapsed=$((end - start))
printf 'first run, from the command to "the system is up": %d min %02d s (commit %s)\n' \
  $((elapsed / 60)) $((elapsed % 60)) "$(git rev-parse --short HEAD)"
