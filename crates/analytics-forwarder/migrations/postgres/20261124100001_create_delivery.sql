-- Every order event to deliver to the data platform, written in the same transaction that
-- records the event as consumed, so that a crash never loses one and a restart resumes them.
CREATE TABLE delivery (
    event_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- The event envelope, sent as the request body.
    body TEXT NOT NULL,
    -- The trace the event belongs to; the HTTP call continues it.
    traceparent TEXT NOT NULL,
    -- Where the event was consumed from, for its dead letter if it is never delivered.
    source_partition BIGINT NOT NULL,
    source_offset BIGINT NOT NULL,
    -- PENDING until the data platform accepted it (DELIVERED), or until the retry budget ran
    -- out or it refused the event for good (FAILED, and published to the dead-letter topic).
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    -- Milliseconds since the Unix epoch before which it is not tried (again). A worker that
    -- claims a row moves this forward, so that another worker does not send it meanwhile.
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);

CREATE INDEX delivery_due ON delivery (next_attempt_at) WHERE status = 'PENDING';
