-- The parked rows, which /metrics counts (outbox_parked) and the relay's key check reads: a
-- partial index, so that counting them never scans the whole outbox.
CREATE INDEX outbox_message_parked ON outbox_message (message_key) WHERE parked_at IS NOT NULL;
