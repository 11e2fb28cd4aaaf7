-- saga patch 1 (PATCHES.md): header_fetch.sql looks a record's headers up by
-- (topition, offset_id); without an index each lookup scans every header of every topic.
create index if not exists header_topition_offset on header (topition, offset_id);
