#!/usr/bin/env bash
# Builds and installs `saga-broker` (Tansu 0.6.0 with the patches of broker/PATCHES.md) into
# ~/.cargo/bin, unless the installed one already has this version. The first build compiles
# Tansu and its dependencies: about 12 minutes on 2 cores; later builds reuse target/.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(sed -n 's/^version = "\(.*\)"/\1/p' broker/Cargo.toml | head -n1)
if have=$(saga-broker --version 2>/dev/null) && [ "$have" = "saga-broker $want" ]; then
  exit 0
fi
echo "==> building saga-broker $want (Tansu 0.6.0, patched; about 12 minutes the first time)"
CARGO_TARGET_DIR="$PWD/target/broker" cargo install --locked --path broker --force
