#!/usr/bin/env bash
# Creates every topic of the contract (crates/contract/src/topics.rs) with its partition
# count; topics that exist are left as they are. Run once by the `kafka-init` service of
# docker-compose.yml; a test checks this list against the contract.
set -euo pipefail
BOOTSTRAP=${BOOTSTRAP:-kafka:9092}
TOPICS=${KAFKA_BIN:-/opt/kafka/bin}/kafka-topics.sh

create() { # name partitions [extra kafka-topics.sh arguments]
  local name=$1 partitions=$2; shift 2
  "$TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor 1 "$@"
}

create order.events 3
create stock.events 3
create coupon.events 3
create product.catalog 3 --config cleanup.policy=compact
create order-service.dlq 1
create product-service.dlq 1
create coupon-service.dlq 1
create analytics-forwarder.dlq 1

"$TOPICS" --bootstrap-server "$BOOTSTRAP" --list
