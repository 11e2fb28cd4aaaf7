#!/usr/bin/env bash
# The test command: installs what the tests need if it is missing (saga-broker, Apache Kafka,
# Postgres's binaries, schemathesis, Chromium, kcat, Debian's docker-compose, cargo-machete),
# starts a Postgres server of its own (each test starts its own broker on free ports), then
# checks formatting, dependencies and lints and runs every test of the workspace against real
# brokers and databases: the integration suites on Tansu and again on Apache Kafka, and the
# compose topology rehearsed in network namespaces (as root).
#
# With TEST_DATABASE_URL set, the tests use that server instead (a role allowed to create
# databases), and the chaos run with a database restart runs only if CHAOS_DB_RESTART_COMMAND
# says how to restart it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-broker.sh >/dev/null
bash scripts/install-postgres.sh
# Apache Kafka of the compose file's version, from Maven Central, into target/tools.
bash scripts/install-kafka.sh
# schemathesis (a virtualenv in target/tools), headless Chromium, kcat and iproute2.
bash scripts/install-test-tools.sh
# Docker cannot run here; Debian's docker-compose checks docker-compose.yml statically.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "==> installing docker-compose (to check docker-compose.yml)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
# cargo-machete into the project's target/tools, not the user's ~/.cargo/bin.
export PATH="$PWD/target/tools/bin:$PATH"
if ! [ -x target/tools/bin/cargo-machete ]; then
  echo "==> installing cargo-machete into target/tools (about 2 minutes, once)"
  cargo install cargo-machete --version 0.9.2 --locked --root target/tools
fi

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  # shellcheck source=scripts/private-postgres.sh
  source scripts/private-postgres.sh
  export CHAOS_DB_RESTART_COMMAND="$PRIVATE_PG_RESTART"
fi

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo machete (no dependency declared and unused)"
# The workspace and the broker crate; broker/.ignore leaves the vendored Tansu crate out.
cargo machete
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> cargo test (services on Postgres, broker Tansu)"
cargo test --workspace
# The runs below name their test targets within the whole workspace rather than picking
# packages with -p: the features of every dependency then resolve as for the run above, and
# its build is reused instead of rebuilt (about 1.5 minutes a run).
echo "==> the integration suites again, services on SQLite"
TEST_BACKEND=sqlite cargo test --workspace --test eventing --test limits \
  --test database_tls --test saga --test metrics --test facade --test provenance
echo "==> the eventing, saga, replica and liveness suites again, on Apache Kafka"
TEST_BROKER=kafka cargo test --workspace --test eventing --test saga --test metrics \
  --test liveness --test provenance

# The rehearsal makes network namespaces, which needs root.
echo "==> the compose topology, rehearsed as processes in network namespaces"
if [ "$(id -u)" = 0 ]; then
  cargo test --workspace --test rehearsal
else
  sudo -E env "PATH=$PATH" cargo test --workspace --test rehearsal
fi

# The chaos run on Postgres restarts the database server, so it runs alone, last.
if [ -n "${CHAOS_DB_RESTART_COMMAND:-}" ]; then
  echo "==> a small chaos run on Postgres, with a database restart among its faults"
  CHAOS_POSTGRES_URL="$TEST_DATABASE_URL" cargo test --workspace --test chaos_postgres
else
  echo "==> no CHAOS_DB_RESTART_COMMAND for $TEST_DATABASE_URL: the chaos run with a database restart is left out"
fi
