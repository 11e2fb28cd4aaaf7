#!/usr/bin/env bash
# Installs the Tansu broker (pinned in crates/shopctl/tansu.env, which shopctl reads too)
# unless `tansu` is already on PATH. The first install compiles it from crates.io and takes
# about 12 minutes on 2 cores.
set -euo pipefail
# shellcheck source=../crates/shopctl/tansu.env
source "$(dirname "$0")/../crates/shopctl/tansu.env"
if command -v tansu >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing tansu $TANSU_VERSION (about 12 minutes the first time)"
cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES"
