#!/usr/bin/env bash
# Creates the compose stack's Kafka users (SCRAM-SHA-512, passwords from the environment, that
# is from .env) and their ACLs, under the StandardAuthorizer with nothing allowed by default.
# Run by `kafka-init`, which shares the broker's network namespace and so reaches its
# loopback-only PLAINTEXT listener (localhost:19092), where the broker's own processes are
# the super user; no other container can reach that listener.
#
# Each service may write only the topics it produces (and its dead-letter topic) and read only
# the topics it consumes, in the consumer group named after it; crates/deploy-tests checks
# these `allow` lines against the contract (crates/contract/src/topics.rs, FLOWS). `kcat`
# reads, and only reads; `operator` (shopctl and the console) reads everything and writes
# back dead letters.
set -euo pipefail
BOOTSTRAP=${BOOTSTRAP:-localhost:19092}
BIN=${KAFKA_BIN:-/opt/kafka/bin}

# The passwords go through a file only its owner may read, never a command line, where any
# process of the container could read them in /proc/<pid>/cmdline.
secrets=$(mktemp -d)
trap 'rm -rf "$secrets"' EXIT
chmod 700 "$secrets"

user() { # name password
  local file="$secrets/$1.properties"
  (umask 077 && printf 'SCRAM-SHA-512=iterations=8192,password=%s\n' "$2" > "$file")
  "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --alter --entity-type users \
    --entity-name "$1" --add-config-file "$file" >/dev/null
  rm -f "$file"
}

allow() { # principal operation resource-type resource-name [prefixed]
  local principal=$1 operation=$2 type=$3 name=$4 pattern=${5:-literal}
  local resource
  case "$type" in
    topic) resource=(--topic "$name") ;;
    group) resource=(--group "$name") ;;
    cluster) resource=(--cluster) ;;
  esac
  "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --add --allow-principal "User:$principal" \
    --operation "$operation" "${resource[@]}" --resource-pattern-type "$pattern" >/dev/null
}

user order-service "$ORDER_SERVICE_KAFKA_PASSWORD"
user product-service "$PRODUCT_SERVICE_KAFKA_PASSWORD"
user coupon-service "$COUPON_SERVICE_KAFKA_PASSWORD"
user analytics-forwarder "$ANALYTICS_FORWARDER_KAFKA_PASSWORD"
user kcat "$KCAT_KAFKA_PASSWORD"
user operator "$OPERATOR_KAFKA_PASSWORD"

allow order-service Write topic order.events
allow order-service Write topic order-service.dlq
allow order-service Read topic stock.events
allow order-service Read topic coupon.events
allow order-service Read topic product.catalog
allow order-service Read group order-service
allow order-service IdempotentWrite cluster kafka-cluster

allow product-service Write topic stock.events
allow product-service Write topic product.catalog
allow product-service Write topic product-service.dlq
allow product-service Read topic order.events
allow product-service Read group product-service
allow product-service IdempotentWrite cluster kafka-cluster

allow coupon-service Write topic coupon.events
allow coupon-service Write topic coupon-service.dlq
allow coupon-service Read topic order.events
allow coupon-service Read group coupon-service
allow coupon-service IdempotentWrite cluster kafka-cluster

allow analytics-forwarder Write topic analytics-forwarder.dlq
allow analytics-forwarder Read topic order.events
allow analytics-forwarder Read group analytics-forwarder
allow analytics-forwarder IdempotentWrite cluster kafka-cluster

# kcat: every topic, read only, in groups of its own.
allow kcat Read topic '*'
allow kcat Read group kcat- prefixed

# shopctl and the console: read every topic in groups of their own; write dead letters back
# to the topics they came from (dlq replay).
allow operator Read topic '*'
allow operator Write topic '*'
allow operator Read group shopctl- prefixed
allow operator Read group reader- prefixed
allow operator Read group console- prefixed
allow operator IdempotentWrite cluster kafka-cluster

"$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --list
