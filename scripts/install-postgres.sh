#!/usr/bin/env bash
# Installs Postgres (Debian's package) unless its server binaries are already there. Needs root
# (or sudo) only when it has to install.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "==> installing Postgres"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
