-- The transactional outbox: events committed together with the state change that caused
-- them, published by the relay in `id` order and then marked sent.
CREATE TABLE outbox_message (
    -- Publish order: rows of one aggregate are inserted while its row is locked, so their ids
    -- follow the order of their commits.
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    message_key TEXT NOT NULL,
    -- The encoded envelope, exactly as it will be published.
    payload TEXT NOT NULL,
    -- Kafka headers as a JSON object of name to value (event_type, content-type, traceparent).
    headers TEXT NOT NULL,
    -- Milliseconds since the Unix epoch.
    created_at BIGINT NOT NULL,
    -- Milliseconds since the Unix epoch when the broker acknowledged it; NULL until then.
    sent_at BIGINT,
    -- Set when the broker refused the message for good (too large, invalid): the relay stops
    -- trying it, reports it, and keeps it here for a person to deal with.
    parked_at BIGINT,
    park_reason TEXT
);

CREATE INDEX outbox_message_unsent ON outbox_message (id) WHERE sent_at IS NULL AND parked_at IS NULL;

-- One relay per database publishes at a time, so that per-key order holds with replicas.
CREATE TABLE outbox_relay_lease (
    name TEXT PRIMARY KEY,
    -- The instance id of the relay holding the lease; empty when nobody has held it.
    holder TEXT NOT NULL,
    -- Milliseconds since the Unix epoch after which another relay may take the lease.
    expires_at BIGINT NOT NULL
);

INSERT INTO outbox_relay_lease (name, holder, expires_at) VALUES ('relay', '', 0);
