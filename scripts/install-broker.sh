#!/usr/bin/env bash
# Builds `saga-broker` (Tansu 0.6.0 with the patches of broker/PATCHES.md) into a folder of its
# own version in the user's cache, ${XDG_CACHE_HOME:-~/.cache}/saga-shop/saga-broker-<version>,
# unless it is there already: never onto PATH or over a program of the user's, and a fresh clone
# reuses a broker built before. The tests and `shopctl up` look for it there
# (crates/local-broker); SAGA_BROKER names another binary instead. The first build compiles
# Tansu and its dependencies: 7 to 9½ minutes on 2 cores; later builds reuse target/broker.
# Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(sed -n 's/^version = "\(.*\)"/\1/p' broker/Cargo.toml | head -n1)
root="${XDG_CACHE_HOME:-$HOME/.cache}/saga-shop/saga-broker-$want"
if [ -x "$root/bin/saga-broker" ] && [ "$("$root/bin/saga-broker" --version 2>/dev/null)" = "saga-broker $want" ]; then
  echo "$root/bin/saga-broker"
  exit 0
fi
echo "==> building saga-broker $want (Tansu 0.6.0, patched; 7 to 9½ minutes on 2 cores the first time) into $root" >&2
CARGO_TARGET_DIR="$PWD/target/broker" cargo install --locked --force --root "$root" --path broker >&2
echo "$root/bin/saga-broker"
