#!/usr/bin/env bash
# Runs the whole system locally: Tansu (persistent, under .local/), Postgres with one database
# per service, every service, and the data-platform mock. Prints where each listens and stops
# everything on Ctrl-C. Run it again and the orders, stock and offsets are still there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

STATE=.local
LOGS=$STATE/logs
BROKER_PORT=${BROKER_PORT:-9092}
mkdir -p "$LOGS" "$STATE/tansu"

bash scripts/install-tansu.sh
bash scripts/start-postgres.sh
PG=postgres://shop:shop@127.0.0.1:5432
for db in orders products coupons analytics; do
  if ! psql "$PG/postgres" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    psql "$PG/postgres" -qc "CREATE DATABASE $db"
  fi
done

echo "==> building (the first build takes a few minutes)"
cargo build -j2 --bins

pids=()
broker_pid=
stop() {
  echo
  echo "==> stopping"
  # Services first, so that they commit their offsets and leave their groups while the
  # broker is still there; then the broker.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 150); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  [ -n "$broker_pid" ] && kill -TERM "$broker_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  exit 0
}
trap stop INT TERM

start() { # name, then the command; logs go to .local/logs/<name>.log
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  pids+=($!)
}

tansu broker \
  --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --storage-engine "sqlite://$STATE/tansu/tansu.db" >"$LOGS/tansu.log" 2>&1 &
broker_pid=$!
export KAFKA_BROKERS=127.0.0.1:$BROKER_PORT
for _ in $(seq 1 100); do
  target/debug/shopctl topics create >/dev/null 2>&1 && break
  sleep 0.2
done
target/debug/shopctl topics create >/dev/null

start data-platform-mock env HTTP_ADDR=127.0.0.1:8090 target/debug/data-platform-mock
start order-service env HTTP_ADDR=127.0.0.1:8080 DATABASE_URL=$PG/orders target/debug/order-service
start product-service env HTTP_ADDR=127.0.0.1:8081 DATABASE_URL=$PG/products target/debug/product-service
start coupon-service env HTTP_ADDR=127.0.0.1:8082 DATABASE_URL=$PG/coupons target/debug/coupon-service
start analytics-forwarder env HTTP_ADDR=127.0.0.1:8083 DATABASE_URL=$PG/analytics \
  DATA_PLATFORM_URL=http://127.0.0.1:8090 target/debug/analytics-forwarder

for port in 8080 8081 8082 8083 8090; do
  for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null || { echo "port $port is not ready; see $LOGS/"; stop; }
done

cat <<INFO
==> the system is up (logs in $LOGS/, Ctrl-C stops everything)
    broker               127.0.0.1:$BROKER_PORT  (Tansu, data in $STATE/tansu/)
    order-service        http://127.0.0.1:8080
    product-service      http://127.0.0.1:8081
    coupon-service       http://127.0.0.1:8082
    analytics-forwarder  http://127.0.0.1:8083
    data-platform-mock   http://127.0.0.1:8090
    tail a topic:        target/debug/shopctl tail order.events --from-beginning
INFO
# Sleep in short steps rather than `wait`, so that Ctrl-C is handled at once.
while true; do sleep 1; done
