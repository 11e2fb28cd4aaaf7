-- Coupons: each belongs to one user and can be used by one order at a time.
CREATE TABLE coupon (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    -- FIXED: `value` minor units off. PERCENT: `value` percent off (1 to 100).
    kind TEXT NOT NULL,
    value BIGINT NOT NULL,
    -- Milliseconds since the Unix epoch after which it cannot be applied; NULL: never.
    expires_at BIGINT,
    -- The order using it; NULL while it is available. Set and cleared only by events.
    used_by_order TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- What this service decided for each order it heard of, so that a repeated or late event
-- finds the decision already made.
CREATE TABLE coupon_use (
    order_id TEXT PRIMARY KEY,
    -- The coupon the order asked for; NULL for a VOIDED row.
    coupon_id BIGINT,
    -- APPLIED: the coupon is used by the order. REJECTED: it was refused. RELEASED: given
    -- back after cancellation. VOIDED: cancelled before its creation was seen.
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
