//! Retention: published outbox rows and old processed-event records are deleted in the
//! background, so that neither table grows forever.
//!
//! The processed-event record is what makes a redelivered event harmless, so it must outlive
//! every copy of the event a consumer could still read: keep `PROCESSED_EVENT_RETENTION_MS`
//! above the `retention.ms` of the topics (Kafka's default is 7 days; the default here is 8).
//! Unsent and parked outbox rows are never deleted.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use kit::db::{Db, now_ms};
use kit::metrics::Counters;

use crate::metrics::TableLabels;

/// How long rows are kept.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionSettings {
    /// How long a published outbox row is kept.
    #[arg(
        long = "outbox-retention-ms",
        env = "OUTBOX_RETENTION_MS",
        default_value = "1day",
        value_parser = kit::duration::parse
    )]
    pub outbox: Duration,
    /// How long the record of a handled event is kept; keep it above the
    /// topics' retention.
    #[arg(
        long = "processed-event-retention-ms",
        env = "PROCESSED_EVENT_RETENTION_MS",
        default_value = "8days",
        value_parser = kit::duration::parse
    )]
    pub processed_event: Duration,
    /// How often old rows are deleted.
    #[arg(
        long = "cleanup-interval-ms",
        env = "CLEANUP_INTERVAL_MS",
        default_value = "1m",
        value_parser = kit::duration::parse
    )]
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        kit::defaults::defaults()
    }
}

/// Most rows deleted per statement, so that a large backlog never holds a long lock.
const BATCH: i64 = 5_000;

/// Deletes what is past retention at `now`; returns how many outbox rows and processed-event
/// records it deleted.
pub async fn sweep(
    db: &Db,
    settings: &RetentionSettings,
    now: i64,
) -> Result<(u64, u64), sqlx::Error> {
    let outbox = delete_in_batches(
        db,
        "DELETE FROM outbox_message WHERE id IN \
         (SELECT id FROM outbox_message WHERE sent_at IS NOT NULL AND sent_at < $1 LIMIT $2)",
        now - kit::duration::as_millis_i64(settings.outbox),
    )
    .await?;
    let processed = delete_in_batches(
        db,
        "DELETE FROM processed_event WHERE event_id IN \
         (SELECT event_id FROM processed_event WHERE processed_at < $1 LIMIT $2)",
        now - kit::duration::as_millis_i64(settings.processed_event),
    )
    .await?;
    Ok((outbox, processed))
}

async fn delete_in_batches(db: &Db, sql: &str, before: i64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let n = sqlx::query(sql)
            .bind(before)
            .bind(BATCH)
            .execute(db)
            .await?
            .rows_affected();
        deleted += n;
        if n < BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// Sweeps every `interval` until `shutdown`.
pub async fn run(
    db: Db,
    settings: RetentionSettings,
    deleted: Counters<TableLabels>,
    shutdown: CancellationToken,
) {
    let interval = settings.interval;
    let [outbox_deleted, processed_deleted] = ["outbox_message", "processed_event"]
        .map(|table| deleted.get_or_create_owned(&TableLabels { table }));
    kit::app::every(interval, shutdown, || async {
        match sweep(&db, &settings, now_ms()).await {
            Ok((outbox, processed)) => {
                outbox_deleted.inc_by(outbox);
                processed_deleted.inc_by(processed);
                if outbox + processed > 0 {
                    tracing::info!(outbox, processed, "deleted rows past retention");
                }
            }
            Err(error) => tracing::warn!(%error, "retention sweep failed; will try again"),
        }
    })
    .await;
}
