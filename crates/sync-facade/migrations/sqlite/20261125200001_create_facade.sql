-- The synchronous baseline keeps everything in one database, as the old monolith did.
CREATE TABLE product (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    price INTEGER NOT NULL CHECK (price >= 0),
    -- Never negative: a line that would take more than there is fails the whole order.
    stock INTEGER NOT NULL CHECK (stock >= 0)
);

CREATE TABLE coupon (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    value INTEGER NOT NULL,
    -- The order that used it; NULL while it is available.
    used_by_order TEXT
);

CREATE TABLE facade_order (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    total_amount INTEGER NOT NULL,
    discount_amount INTEGER NOT NULL,
    final_amount INTEGER NOT NULL,
    coupon_id INTEGER,
    created_at INTEGER NOT NULL
);

CREATE TABLE facade_order_line (
    order_id TEXT NOT NULL REFERENCES facade_order (id),
    product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
