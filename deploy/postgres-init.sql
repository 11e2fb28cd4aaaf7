-- Run once by the postgres container on an empty data volume: one role and one database per
-- service, so that no service can read another's tables. The passwords are for a local
-- stack; set real ones (and DATABASE_URL) in any shared deployment.
CREATE ROLE order_service LOGIN PASSWORD 'order_service';
CREATE DATABASE orders OWNER order_service;

CREATE ROLE product_service LOGIN PASSWORD 'product_service';
CREATE DATABASE products OWNER product_service;

CREATE ROLE coupon_service LOGIN PASSWORD 'coupon_service';
CREATE DATABASE coupons OWNER coupon_service;

CREATE ROLE analytics_forwarder LOGIN PASSWORD 'analytics_forwarder';
CREATE DATABASE analytics OWNER analytics_forwarder;
