-- Products and their stock. `available + reserved` is every unit the shop holds; a
-- reservation moves units from `available` to `reserved`, a release moves them back.
CREATE TABLE product (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    -- Price of one unit in minor units (cents).
    price INTEGER NOT NULL CHECK (price >= 0),
    -- Units free to reserve; never negative, which is what makes overselling impossible.
    available INTEGER NOT NULL CHECK (available >= 0),
    -- Units held by reservations of orders that are not cancelled.
    reserved INTEGER NOT NULL CHECK (reserved >= 0),
    -- Milliseconds since the Unix epoch.
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- What this service decided for each order it heard of. The row exists from the first event
-- of an order on, so a late or repeated event finds the decision already made.
CREATE TABLE reservation (
    order_id TEXT PRIMARY KEY,
    -- RESERVED: lines held. FAILED: nothing held, the order could not be served.
    -- RELEASED: lines given back after cancellation. VOIDED: cancelled before it was seen.
    status TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The lines a reservation holds (or held, once released).
CREATE TABLE reservation_line (
    order_id TEXT NOT NULL REFERENCES reservation (order_id),
    product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
