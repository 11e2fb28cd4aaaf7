-- The version of each catalog entry: the `occurred_at` (ms) of the `ProductUpserted` it was
-- last set from. An upsert older than the entry (a replayed or redelivered old event) is not
-- applied, so it can never roll a price back.
ALTER TABLE catalog_product ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
