#!/usr/bin/env bash
# Writes .env for docker compose: every variable of .env.example with a random value (32 hex
# characters from /dev/urandom), readable by its owner only. An existing .env is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -e .env ]; then
  echo ".env exists; leaving it as it is" >&2
  exit 0
fi
umask 077
while IFS= read -r line; do
  case "$line" in
    ''|'#'*) continue ;;
  esac
  name=${line%%=*}
  echo "$name=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
done < .env.example > .env
echo "wrote .env (mode 600); ADMIN_TOKEN is in it"
