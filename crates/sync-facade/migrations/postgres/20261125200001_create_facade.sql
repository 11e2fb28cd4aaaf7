-- The synchronous baseline keeps everything in one database, as the old monolith did.
CREATE TABLE product (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    price BIGINT NOT NULL CHECK (price >= 0),
    -- Never negative: a line that would take more than there is fails the whole order.
    stock BIGINT NOT NULL CHECK (stock >= 0)
);

CREATE TABLE coupon (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    value BIGINT NOT NULL,
    -- The order that used it; NULL while it is available.
    used_by_order TEXT
);

CREATE TABLE facade_order (
    id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    total_amount BIGINT NOT NULL,
    discount_amount BIGINT NOT NULL,
    final_amount BIGINT NOT NULL,
    coupon_id BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE facade_order_line (
    order_id TEXT NOT NULL REFERENCES facade_order (id),
    product_id BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    unit_price BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
