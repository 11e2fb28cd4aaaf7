-- The order service's copy of the product catalog, fed by `product.catalog`. Orders are
-- priced from it, so placing an order never calls the product service.
CREATE TABLE catalog_product (
    product_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    -- Price of one unit in minor units.
    price INTEGER NOT NULL,
    -- Milliseconds since the Unix epoch when this replica last changed the row.
    updated_at INTEGER NOT NULL
);

-- Orders (`order` is a reserved word).
CREATE TABLE customer_order (
    -- UUID v7, as text.
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    -- PENDING until the saga ends; then CONFIRMED or CANCELLED.
    status TEXT NOT NULL,
    -- Sum of quantity × unit price, before discount, in minor units.
    total_amount INTEGER NOT NULL,
    -- The coupon's discount once the coupon service applied it; 0 without one.
    discount_amount INTEGER NOT NULL,
    coupon_id INTEGER,
    -- 1 once `StockReserved` arrived for this order.
    stock_reserved INTEGER NOT NULL,
    -- 1 once `CouponApplied` arrived for this order.
    coupon_applied INTEGER NOT NULL,
    -- OUT_OF_STOCK, COUPON_REJECTED, TIMEOUT or USER_CANCELLED once cancelled.
    cancel_reason TEXT,
    cancel_detail TEXT,
    -- The W3C trace context of the request that placed the order; later steps continue it.
    traceparent TEXT NOT NULL,
    -- Milliseconds since the Unix epoch after which a PENDING order is cancelled (TIMEOUT).
    deadline_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE INDEX customer_order_pending_deadline ON customer_order (deadline_at) WHERE status = 'PENDING';
CREATE INDEX customer_order_coupon ON customer_order (coupon_id) WHERE coupon_id IS NOT NULL;

CREATE TABLE order_line (
    order_id TEXT NOT NULL REFERENCES customer_order (id),
    line_no INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    -- The catalog price when the order was placed.
    unit_price INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- What happened to each order, in order: what `GET /orders/{id}` shows as its timeline.
CREATE TABLE order_timeline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL REFERENCES customer_order (id),
    -- Milliseconds since the Unix epoch.
    at INTEGER NOT NULL,
    -- The event that moved the order, such as StockReserved or OrderConfirmed.
    event TEXT NOT NULL,
    detail TEXT
);

CREATE INDEX order_timeline_order ON order_timeline (order_id, id);

-- `Idempotency-Key`s of `POST /orders`: the same key with the same body returns the same
-- order; with another body it is refused.
CREATE TABLE idempotency_key (
    idempotency_key TEXT PRIMARY KEY,
    -- SHA-256 of the canonical request, hex.
    request_hash TEXT NOT NULL,
    order_id TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
