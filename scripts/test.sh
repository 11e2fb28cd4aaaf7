#!/usr/bin/env bash
# The test command: starts what the tests need (Postgres; Tansu is installed if missing and
# started by each test on its own port), then checks formatting and lints and runs every test
# of the workspace against the real broker and database.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-tansu.sh
bash scripts/start-postgres.sh
# Docker cannot run here; Debian's docker-compose checks docker-compose.yml statically.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "==> installing docker-compose (to check docker-compose.yml)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://shop:shop@127.0.0.1:5432/postgres}"

# Databases left by earlier runs: each test makes its own, named t_<label>_<uuid> (and each
# chaos run chaos_<service>_<uuid>).
psql "$TEST_DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 't\_%' OR datname LIKE 'chaos\_%'" |
  while read -r db; do psql "$TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" || true; done

if ! command -v cargo-machete >/dev/null 2>&1; then
  echo "==> installing cargo-machete (about 2 minutes, once)"
  cargo install cargo-machete --version 0.9.2 --locked
fi

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo machete (no dependency declared and unused)"
cargo machete
echo "==> cargo clippy"
cargo clippy -j2 --workspace --all-targets -- -D warnings
echo "==> cargo test (services on Postgres)"
cargo test -j2 --workspace
echo "==> the integration suites again, services on SQLite"
TEST_BACKEND=sqlite cargo test -j2 -p eventing -p order-service

# The chaos run on Postgres restarts the database server, so it runs alone, last.
echo "==> a small chaos run on Postgres, with a database restart among its faults"
read -r pg_version pg_cluster _ <<<"$(pg_lsclusters -h | head -n1)"
if [ "$(id -u)" = 0 ]; then restart="pg_ctlcluster $pg_version $pg_cluster restart"; else restart="sudo pg_ctlcluster $pg_version $pg_cluster restart"; fi
CHAOS_POSTGRES_URL="$TEST_DATABASE_URL" CHAOS_DB_RESTART_COMMAND="$restart" \
  cargo test -j2 -p shopctl --test chaos_postgres
