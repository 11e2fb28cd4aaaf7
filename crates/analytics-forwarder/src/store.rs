//! Every SQL statement of the analytics forwarder.

use kit::db::placeholders;
use kit::{Conn, Db, now_ms};
use sqlx::Row;

/// A delivery due to be sent.
#[derive(Debug, Clone)]
pub struct Due {
    pub event_id: String,
    pub order_id: String,
    pub event_type: String,
    pub body: String,
    pub traceparent: String,
    pub source_partition: i64,
    pub source_offset: i64,
    pub attempts: i64,
    /// When the consumer recorded it (milliseconds since the Unix epoch).
    pub created_at: i64,
}

/// A delivery to make, as the consumer records it.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub event_id: &'a str,
    pub order_id: &'a str,
    pub event_type: &'a str,
    pub body: &'a str,
    pub traceparent: &'a str,
    pub source_partition: i32,
    pub source_offset: i64,
}

/// Records a delivery to make; a second insert of the same event changes nothing.
pub async fn insert_delivery(conn: &mut Conn, new: &NewDelivery<'_>) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO delivery (event_id, order_id, event_type, body, traceparent, source_partition, \
         source_offset, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', 0, $8, $8) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(new.event_id)
    .bind(new.order_id)
    .bind(new.event_type)
    .bind(new.body)
    .bind(new.traceparent)
    .bind(i64::from(new.source_partition))
    .bind(new.source_offset)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims up to `limit` PENDING deliveries due at `now`, oldest first, until `until`, and
/// returns them: one statement for the whole round. A row another worker claimed meanwhile
/// no longer matches (its `next_attempt_at` moved past `now`), so no two workers send the
/// same row at the same time; on Postgres the second `UPDATE` waits for the first and then
/// finds the row taken.
pub async fn claim_due(db: &Db, now: i64, until: i64, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE delivery SET next_attempt_at = $1 \
         WHERE status = 'PENDING' AND next_attempt_at <= $2 AND event_id IN \
         (SELECT event_id FROM delivery WHERE status = 'PENDING' AND next_attempt_at <= $2 \
          ORDER BY next_attempt_at LIMIT $3) \
         RETURNING event_id, order_id, event_type, body, traceparent, source_partition, \
         source_offset, attempts, created_at",
    )
    .bind(until)
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let mut due = rows
        .iter()
        .map(|row| {
            Ok(Due {
                event_id: row.try_get("event_id")?,
                order_id: row.try_get("order_id")?,
                event_type: row.try_get("event_type")?,
                body: row.try_get("body")?,
                traceparent: row.try_get("traceparent")?,
                source_partition: row.try_get("source_partition")?,
                source_offset: row.try_get("source_offset")?,
                attempts: row.try_get("attempts")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    // `RETURNING` gives rows in no particular order; deliver the oldest first.
    due.sort_by_key(|d| d.created_at);
    Ok(due)
}

/// Marks deliveries DELIVERED, each with one attempt more than it had: one statement for
/// all the deliveries of a round that the data platform accepted.
pub async fn mark_delivered(db: &Db, event_ids: &[&str]) -> Result<(), sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE delivery SET status = 'DELIVERED', attempts = attempts + 1, delivered_at = $1, \
         last_error = NULL WHERE status = 'PENDING' AND event_id IN ({})",
        placeholders(2, event_ids.len())
    );
    let mut query = sqlx::query(&sql).bind(now_ms());
    for id in event_ids {
        query = query.bind(*id);
    }
    query.execute(db).await?;
    Ok(())
}

pub async fn schedule_retry(
    db: &Db,
    event_id: &str,
    attempts: i64,
    at: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE delivery SET attempts = $1, next_attempt_at = $2, last_error = $3 WHERE event_id = $4")
        .bind(attempts)
        .bind(at)
        .bind(error)
        .bind(event_id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn mark_failed(
    db: &Db,
    event_id: &str,
    attempts: i64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE delivery SET status = 'FAILED', attempts = $1, last_error = $2 WHERE event_id = $3",
    )
    .bind(attempts)
    .bind(error)
    .bind(event_id)
    .execute(db)
    .await?;
    Ok(())
}

/// How many deliveries are in each status.
pub async fn counts(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM delivery GROUP BY status")
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("status")?, row.try_get("n")?)))
        .collect()
}

/// Makes FAILED deliveries (all, or the one of `event_id`) PENDING again with a fresh retry
/// budget, due now; returns how many. Repeating it changes nothing more.
pub async fn retry_failed(db: &Db, event_id: Option<&str>) -> Result<u64, sqlx::Error> {
    let now = now_ms();
    let done = match event_id {
        Some(id) => {
            sqlx::query(
                "UPDATE delivery SET status = 'PENDING', attempts = 0, next_attempt_at = $1 \
                 WHERE status = 'FAILED' AND event_id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(db)
            .await?
        }
        None => {
            sqlx::query(
                "UPDATE delivery SET status = 'PENDING', attempts = 0, next_attempt_at = $1 \
                 WHERE status = 'FAILED'",
            )
            .bind(now)
            .execute(db)
            .await?
        }
    };
    Ok(done.rows_affected())
}
