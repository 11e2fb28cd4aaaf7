#!/usr/bin/env bash
# kafka-init: the contract's topics, then the users and their ACLs.
set -euo pipefail
BOOTSTRAP=${ADMIN_BOOTSTRAP:-localhost:19092} bash /deploy/create-topics.sh
bash /deploy/kafka-security.sh
