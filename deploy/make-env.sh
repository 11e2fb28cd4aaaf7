#!/usr/bin/env bash
# Writes .env for docker compose: every variable of .env.example with a random value (32 hex
# characters from /dev/urandom), readable by its owner only. An existing .env is kept.
# ENV_FILE writes another file instead (the compose rehearsal writes one of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${ENV_FILE:-.env}
if [ -e "$out" ]; then
  echo "$out exists; leaving it as it is" >&2
  exit 0
fi
umask 077
while IFS= read -r line; do
  case "$line" in
    ''|'#'*) continue ;;
  esac
  name=${line%%=*}
  echo "$name=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
done < .env.example > "$out"
echo "wrote $out (mode 600); ADMIN_TOKEN is in it"
