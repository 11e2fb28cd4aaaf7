#!/usr/bin/env bash
# Run once by the postgres container on an empty data volume: one role and one database per
# service, passwords from the environment (.env). No service role is a superuser, owns its
# database, or may create databases or roles; each may connect to its own database only, and
# in it create and use the tables its migrations make (schema public). PUBLIC keeps nothing.
set -euo pipefail

service() { # role database password
  local role=$1 database=$2 password=$3
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$role" -v database="$database" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD :'password';
CREATE DATABASE :"database";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO :"role";
SQL
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$database" -v role="$role" <<'SQL'
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"role";
SQL
}

# The maintenance databases are not the services' either.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
REVOKE ALL ON DATABASE template1 FROM PUBLIC;
SQL

service order_service orders "$ORDER_SERVICE_DB_PASSWORD"
service product_service products "$PRODUCT_SERVICE_DB_PASSWORD"
service coupon_service coupons "$COUPON_SERVICE_DB_PASSWORD"
service analytics_forwarder analytics "$ANALYTICS_FORWARDER_DB_PASSWORD"
