-- -*- mode: sql; sql-product: sqlite; -*-
-- saga patch 14 (PATCHES.md): the records of a fetch and their headers in one query.
--
-- record_fetch.sql followed by header_fetch.sql for each record ran one query per record
-- on top of the fetch's own; here each record comes with its headers, one row per header
-- (a record without headers is one row whose header columns are null), in offset order and,
-- within a record, in the order its headers were written. The candidates and the byte
-- limit are those of record_fetch.sql (saga patch 2), so the limit still counts keys and
-- values only and applies before the headers are joined.
with candidates as (
select

r.topition,
r.offset_id,
r.attributes,
r.timestamp,
r.k,
r.v,
r.producer_id,
r.producer_epoch

from

cluster c
join topic t on t.cluster = c.id
join topition tp on tp.topic = t.id
join record r on r.topition = tp.id

where

c.name = $1
and t.name = $2
and tp.partition = $3
and r.offset_id >= $4
and r.offset_id < $6

order by r.offset_id
limit 2048),

sized as (
select

topition,
offset_id,
attributes,
timestamp,
k,
v,
sum(coalesce(length(k), 0) + coalesce(length(v), 0)) over (order by offset_id) as bytes,
producer_id,
producer_epoch

from candidates)

select

s.offset_id,
s.attributes,
s.timestamp,
s.k,
s.v,
s.bytes,
s.producer_id,
s.producer_epoch,
h.rowid,
h.k,
h.v

from sized s
left join header h on h.topition = s.topition and h.offset_id = s.offset_id

where s.bytes < $5

order by s.offset_id, h.rowid;
