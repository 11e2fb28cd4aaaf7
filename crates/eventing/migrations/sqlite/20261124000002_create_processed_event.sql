-- The idempotent-consumer record: one row per handled event id, inserted in the same
-- transaction as the event's effect, so that a redelivered event finds its row and is skipped.
CREATE TABLE processed_event (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    topic TEXT NOT NULL,
    -- Milliseconds since the Unix epoch.
    processed_at INTEGER NOT NULL
);
