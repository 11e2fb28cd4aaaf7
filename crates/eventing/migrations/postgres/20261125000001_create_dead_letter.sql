-- Dead letters the broker refuses even with their reason trimmed (the message itself is too
-- large for the dead-letter topic): kept here so that nothing is lost, counted in
-- `dead_letters_parked`, for a person to deal with.
CREATE TABLE dead_letter (
    id BIGSERIAL PRIMARY KEY,
    source_topic TEXT NOT NULL,
    source_partition BIGINT NOT NULL,
    source_offset BIGINT NOT NULL,
    -- 'consume' or 'deliver', as in the dlq.stage header.
    stage TEXT NOT NULL,
    -- Why the message can never be processed.
    error TEXT NOT NULL,
    -- Key and value, hex-encoded so that any bytes survive; NULL when the message had none.
    message_key TEXT,
    payload TEXT,
    -- The message's headers as a JSON list of [name, hex value or null].
    headers TEXT NOT NULL,
    -- Milliseconds since the Unix epoch.
    parked_at BIGINT NOT NULL
);
