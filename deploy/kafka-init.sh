#!/usr/bin/env bash
# kafka-init: the contract's topics, then the users and their ACLs, through the broker's
# loopback-only PLAINTEXT listener (BOOTSTRAP, default localhost:19092). Compose runs it in
# the broker's network namespace from /deploy; the compose rehearsal runs it from deploy/
# with KAFKA_BIN pointing at the tools it installed (the image's are in /opt/kafka/bin).
set -euo pipefail
here=$(dirname "$0")
export BOOTSTRAP=${BOOTSTRAP:-localhost:19092}
bash "$here/create-topics.sh"
bash "$here/kafka-security.sh"
