#!/usr/bin/env bash
# Installs the Tansu broker (pinned) unless `tansu` is already on PATH. The first install
# compiles it from crates.io and takes about 12 minutes on 2 cores.
set -euo pipefail
TANSU_VERSION=0.6.0
if command -v tansu >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing tansu $TANSU_VERSION (about 12 minutes the first time)"
cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,postgres,libsql
