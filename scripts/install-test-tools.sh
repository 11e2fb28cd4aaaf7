#!/usr/bin/env bash
# Installs the outside tools the tests drive, unless they are there already:
# - schemathesis (from PyPI, pinned) in a virtualenv of its own, target/tools/venv, for the test
#   that fuzzes every service from its OpenAPI document (crates/shopctl/tests/openapi.rs);
# - headless Chromium (Debian's `chromium`) for the test that loads the saga console in a real
#   browser (crates/shopctl/tests/console.rs);
# - Debian's `kcat`, and `ip` (iproute2) for the compose rehearsal's network namespaces
#   (crates/deploy-tests/tests/rehearsal).
# Installing Debian packages needs root or sudo; the virtualenv needs neither.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.0
venv=target/tools/venv
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! have=$("$venv/bin/schemathesis" --version 2>/dev/null) ||
  [ "$have" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing chromium (headless, for the console's browser test)"
  apt_install chromium
fi

# Debian's kcat (librdkafka 2.0) for the tests that tail topics as the README does, on both
# brokers; iproute2 (`ip netns`) for the compose rehearsal's hosts.
missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt_install "${missing[@]}"
fi
