//! The transactional outbox and its relay.
//!
//! A service never publishes from a request or a handler. It calls [`enqueue`] inside the
//! transaction that changes its state, so the event commits or rolls back with the change, and
//! then calls [`Outbox::wake`]. The [`Relay`] publishes unsent rows in `id` order, waits for the
//! broker's delivery report of each, and only then marks them sent. A crash anywhere loses
//! nothing: a committed row is published by whichever relay runs next, and a row published
//! but not yet marked is published again, which idempotent consumers absorb.
//!
//! Order per key holds because rows of one aggregate are inserted while its row is locked (so
//! their ids follow their commits), because one relay per database holds a lease, and because
//! the idempotent producer never reorders messages within a partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use contract::Envelope;
use contract::topics::{
    CONTENT_TYPE_JSON, HEADER_CONTENT_TYPE, HEADER_EVENT_TYPE, HEADER_TRACEPARENT,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::{Conn, Db, now_ms, placeholders};
use crate::metrics::Metrics;
use crate::trace::TraceContext;

/// Writes an event into the outbox as part of the caller's transaction. `trace` is the
/// context of the work that caused the event; the message carries a child of it.
pub async fn enqueue(
    conn: &mut Conn,
    envelope: &Envelope,
    trace: &TraceContext,
) -> Result<(), sqlx::Error> {
    let headers = BTreeMap::from([
        (HEADER_EVENT_TYPE, envelope.event_type().to_owned()),
        (HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.to_owned()),
        (HEADER_TRACEPARENT, trace.child().header()),
    ]);
    let headers = serde_json::to_string(&headers).expect("string headers always serialize");
    sqlx::query(
        "INSERT INTO outbox_message (topic, message_key, payload, headers, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(envelope.topic())
    .bind(envelope.key())
    .bind(envelope.to_json())
    .bind(headers)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// The handle that wakes the relay. Cheap to clone; every clone wakes the same relay.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    notify: Arc<Notify>,
}

impl Outbox {
    /// A new outbox handle with no relay waiting yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells the relay that rows were committed. Call it after the commit, not before: a wake
    /// before the commit could let the relay look before the rows are visible.
    pub fn wake(&self) {
        // `notify_one` keeps a permit when the relay is busy, so a wake is never lost.
        self.notify.notify_one();
    }

    /// Waits for the next [`Outbox::wake`]. The relay waits here; so does any other worker
    /// that drains a table filled by committed transactions.
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

/// How the relay polls and batches.
#[derive(Debug, Clone, clap::Args)]
pub struct RelaySettings {
    /// How often the relay looks for unsent rows when nothing woke it, in milliseconds.
    /// Rows committed by another replica of the service are found this way.
    #[arg(
        long = "outbox-poll-interval-ms",
        env = "OUTBOX_POLL_INTERVAL_MS",
        default_value_t = 200
    )]
    pub poll_interval_ms: u64,
    /// Most rows published per round trip to the database.
    #[arg(
        long = "outbox-batch-size",
        env = "OUTBOX_BATCH_SIZE",
        default_value_t = 256
    )]
    pub batch_size: i64,
    /// How long the lease of the publishing relay lasts without renewal, in milliseconds.
    /// When a replica dies, another takes over publishing after this.
    #[arg(
        long = "outbox-lease-ms",
        env = "OUTBOX_LEASE_MS",
        default_value_t = 10_000
    )]
    pub lease_ms: i64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            poll_interval_ms: 200,
            batch_size: 256,
            lease_ms: 10_000,
        }
    }
}

/// Publishes committed outbox rows to Kafka.
pub struct Relay {
    db: Db,
    producer: FutureProducer,
    outbox: Outbox,
    settings: RelaySettings,
    metrics: Metrics,
    /// Identifies this relay in the lease table.
    instance: String,
}

struct OutboxRow {
    id: i64,
    topic: String,
    key: String,
    payload: String,
    headers: String,
}

impl Relay {
    /// A relay for `db`, woken through `outbox`.
    pub fn new(
        db: Db,
        producer: FutureProducer,
        outbox: Outbox,
        settings: RelaySettings,
        metrics: Metrics,
    ) -> Self {
        Relay {
            db,
            producer,
            outbox,
            settings,
            metrics,
            instance: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Runs until `shutdown`, publishing whenever woken and at every poll interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let mut failures = 0u32;
        loop {
            match self.publish_pending().await {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures += 1;
                    let delay = crate::backoff::delay(failures);
                    tracing::warn!(error = %error, failures, ?delay, "outbox relay failed; retrying");
                    self.metrics.inc("outbox_relay_failures_total", &[]);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.outbox.woken() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Publishes every unsent row, batch by batch, if this relay holds the lease.
    async fn publish_pending(&self) -> Result<(), RelayError> {
        while self.hold_lease().await? {
            let rows = self.claim().await?;
            if rows.is_empty() {
                break;
            }
            let span = tracing::debug_span!("outbox.publish", rows = rows.len());
            self.publish(rows).instrument(span).await?;
        }
        Ok(())
    }

    /// Takes or renews the lease; `false` when another live relay holds it.
    async fn hold_lease(&self) -> Result<bool, RelayError> {
        let now = now_ms();
        let taken = sqlx::query(
            "UPDATE outbox_relay_lease SET holder = $1, expires_at = $2 \
             WHERE name = 'relay' AND (holder = $1 OR expires_at < $3)",
        )
        .bind(&self.instance)
        .bind(now + self.settings.lease_ms)
        .bind(now)
        .execute(&self.db)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    async fn claim(&self) -> Result<Vec<OutboxRow>, RelayError> {
        let rows = sqlx::query(
            "SELECT id, topic, message_key, payload, headers FROM outbox_message \
             WHERE sent_at IS NULL AND parked_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&self.db)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(OutboxRow {
                    id: row.try_get("id")?,
                    topic: row.try_get("topic")?,
                    key: row.try_get("message_key")?,
                    payload: row.try_get("payload")?,
                    headers: row.try_get("headers")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(RelayError::from)
    }

    /// Hands every row to the producer in order, then waits for every delivery report and
    /// marks the delivered rows sent. A row that failed stays unsent and is tried again,
    /// unless the broker refused it for good: then it is parked.
    async fn publish(&self, rows: Vec<OutboxRow>) -> Result<(), RelayError> {
        let mut pending = Vec::with_capacity(rows.len());
        let mut parked = Vec::new();
        for row in &rows {
            let headers: BTreeMap<String, String> =
                serde_json::from_str(&row.headers).unwrap_or_default();
            let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.len());
            for (name, value) in &headers {
                kafka_headers = kafka_headers.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
            let mut record = FutureRecord::to(&row.topic)
                .key(&row.key)
                .payload(&row.payload)
                .headers(kafka_headers);
            // Enqueue in order; when librdkafka's queue is full, wait for what is in flight.
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push((row.id, delivery));
                        break;
                    }
                    Err((error, _)) if never_publishable(&error) => {
                        parked.push((row.id, error.to_string()));
                        break;
                    }
                    Err((error, returned)) => {
                        tracing::debug!(%error, "producer queue full; waiting");
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
        let mut sent = Vec::with_capacity(pending.len());
        let mut first_error = None;
        for (id, delivery) in pending {
            match delivery.await {
                Ok(Ok(_)) => sent.push(id),
                Ok(Err((error, _))) if never_publishable(&error) => {
                    parked.push((id, error.to_string()));
                }
                Ok(Err((error, _))) => {
                    first_error.get_or_insert(RelayError::Kafka(error));
                }
                Err(_canceled) => {
                    first_error.get_or_insert(RelayError::ProducerGone);
                }
            }
        }
        self.mark_sent(&sent).await?;
        self.metrics
            .add("outbox_published_total", &[], sent.len() as u64);
        for (id, reason) in &parked {
            self.park(*id, reason).await?;
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Stops trying a row the broker will never take, and says so loudly: it stays in the
    /// table with the reason until a person deals with it.
    async fn park(&self, id: i64, reason: &str) -> Result<(), RelayError> {
        tracing::error!(outbox_id = id, %reason, "the broker refuses this outbox row for good; parking it");
        sqlx::query("UPDATE outbox_message SET parked_at = $1, park_reason = $2 WHERE id = $3")
            .bind(now_ms())
            .bind(reason)
            .bind(id)
            .execute(&self.db)
            .await?;
        self.metrics.inc("outbox_parked_total", &[]);
        Ok(())
    }

    async fn mark_sent(&self, ids: &[i64]) -> Result<(), RelayError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox_message SET sent_at = $1 WHERE id IN ({})",
            placeholders(2, ids.len())
        );
        let mut query = sqlx::query(&sql).bind(now_ms());
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&self.db).await?;
        Ok(())
    }
}

/// Whether the broker (or librdkafka before it) refuses a message for good, whatever the
/// number of tries: too large, or invalid.
fn never_publishable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::InvalidArgument
        )
    )
}

/// How many outbox rows are committed but not yet acknowledged by the broker (parked rows
/// excluded).
pub async fn backlog(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox_message WHERE sent_at IS NULL AND parked_at IS NULL",
    )
    .fetch_one(db)
    .await
}

/// How many outbox rows are parked.
pub async fn parked(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox_message WHERE parked_at IS NOT NULL")
        .fetch_one(db)
        .await
}

/// Why one round of the relay failed; the relay retries with backoff.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the broker did not acknowledge a message: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the producer went away before reporting delivery")]
    ProducerGone,
}
