//! The transactional outbox and its relay.
//!
//! A service never publishes from a request or a handler. It calls [`enqueue`] inside the
//! transaction that changes its state, so the event commits or rolls back with the change, and
//! then calls [`Outbox::wake`]. The [`Relay`] publishes unsent rows in `id` order, waits for the
//! broker's delivery report of each, and only then marks them sent. A crash anywhere loses
//! nothing: a committed row is published by whichever relay runs next, and a row published
//! but not yet marked is published again, which idempotent consumers absorb.
//!
//! Marking is a commit of its own, so the relay marks the rows of several rounds together,
//! at most [`MARK_WITHIN`] after the first of them was published (at once when a batch is
//! full, and before it stops); until then it remembers them and does not publish them again.
//!
//! Order per key holds because rows of one aggregate are inserted while its row is locked (so
//! their ids follow their commits), because one relay per database holds a lease, because
//! the idempotent producer never reorders messages within a partition, and because when a
//! row fails, no later row of the same key is handed over or marked sent in that round: they
//! all go again, after it.
//!
//! The lease outlives a batch (`OUTBOX_LEASE_MS` must exceed `KAFKA_MESSAGE_TIMEOUT_MS`, the
//! longest a delivery report can take), and rows are marked sent only while this relay still
//! holds it. A relay restarted on the same address takes its own lease back at once.
//!
//! When the producer hits a fatal error (an idempotent producer that can no longer keep its
//! guarantees), the relay reports it in readiness and replaces the producer with a new one;
//! the rows it failed are still unsent and go again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use contract::Envelope;
use contract::topics::{
    CONTENT_TYPE_JSON, HEADER_CONTENT_TYPE, HEADER_EVENT_TYPE, HEADER_TRACEPARENT,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::kafka::{Delivery, Record, SharedProducer, never_publishable};
use crate::metrics::RuntimeMetrics;
use kit::db::{Conn, Db, now_ms, placeholders};
use kit::health::Health;
use kit::trace::TraceContext;

/// Writes an event into the outbox as part of the caller's transaction. `trace` is the
/// context of the work that caused the event (a request's, an event's); the relay's publish
/// span continues it, and the message carries that span's context.
pub async fn enqueue(
    conn: &mut Conn,
    envelope: &Envelope,
    trace: &TraceContext,
) -> Result<(), sqlx::Error> {
    let headers = BTreeMap::from([
        (HEADER_EVENT_TYPE, envelope.event_type().to_owned()),
        (HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.to_owned()),
        (HEADER_TRACEPARENT, trace.header()),
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

/// The handle that wakes the relay: a service calls [`kit::wake::Wake::wake`] on it after
/// committing rows with [`enqueue`]. Cheap to clone; every clone wakes the same relay.
pub type Outbox = kit::wake::Wake;

#[derive(Debug, Clone, clap::Args)]
pub struct RelaySettings {
    /// How often the relay looks for unsent rows when nothing woke it.
    /// Rows committed by another replica of the service are found this way.
    #[arg(
        long = "outbox-poll-interval-ms",
        env = "OUTBOX_POLL_INTERVAL_MS",
        default_value = "200ms",
        value_parser = kit::duration::parse
    )]
    pub poll_interval: Duration,
    /// Most rows published per round trip to the database.
    #[arg(
        long = "outbox-batch-size",
        env = "OUTBOX_BATCH_SIZE",
        default_value_t = 256
    )]
    pub batch_size: i64,
    /// How long the lease of the publishing relay lasts without renewal.
    /// When a replica dies, another takes over publishing after this. It must exceed
    /// `KAFKA_MESSAGE_TIMEOUT_MS` by more than 5 s, so that it outlives a batch.
    #[arg(
        long = "outbox-lease-ms",
        env = "OUTBOX_LEASE_MS",
        default_value = "15s",
        value_parser = kit::duration::parse
    )]
    pub lease: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        kit::defaults::defaults()
    }
}

/// The part name the relay reports its state under in `/health/ready`.
pub const HEALTH_PART: &str = "relay";

/// The name of the one lease row the relays of a service share (`outbox_relay_lease`, created
/// by the migration).
const LEASE: &str = "relay";

/// The longest a published row waits to be marked sent. At a steady load every round
/// publishes a row or two, and marking each round's rows would be a commit (and on SQLite a
/// sync of the log) per row; waiting lets the rows of this long share one. A crash within it
/// only publishes those rows again, which consumers absorb.
pub const MARK_WITHIN: Duration = Duration::from_millis(100);

/// The rows this relay published and has not marked sent yet.
#[derive(Debug, Default)]
struct Unmarked {
    ids: Vec<i64>,
    /// When the first of them was published.
    since: Option<tokio::time::Instant>,
}

/// Publishes committed outbox rows to Kafka.
pub struct Relay {
    db: Db,
    producer: SharedProducer,
    outbox: Outbox,
    settings: RelaySettings,
    metrics: Arc<RuntimeMetrics>,
    health: Health,
    /// Identifies this relay in the lease table.
    instance: String,
    /// Until when this relay holds the lease, as it last wrote it (milliseconds since the
    /// epoch; 0 when it does not hold it). The lease is renewed only when less than
    /// [`Relay::renew_margin`] of it is left, not on every round: one write every few
    /// seconds instead of one per wake.
    held_until: AtomicI64,
    /// The time a round may take ([`crate::kafka::KafkaSettings::publish_round_bound`]), in milliseconds. A
    /// round starts only with at least this much of the lease left, so the lease outlives it.
    renew_margin: i64,
    /// Published rows waiting to be marked sent, at most [`MARK_WITHIN`].
    unmarked: std::sync::Mutex<Unmarked>,
}

struct OutboxRow {
    id: i64,
    topic: String,
    key: String,
    payload: String,
    headers: String,
    /// Milliseconds since the Unix epoch when the row was committed, for the publish delay.
    created_at: i64,
}

/// A row handed to the producer: the row, its delivery report to come, and its publish span.
type Pending<'r> = (&'r OutboxRow, Delivery, tracing::Span);

/// What one publishing round has learnt of failures.
#[derive(Default)]
struct Round<'r> {
    /// Per key, the first row that failed: no later row of the key is handed over or marked
    /// sent.
    failed_from: HashMap<&'r str, i64>,
    /// Rows the broker refuses for good, with why.
    parked: Vec<(i64, String)>,
    /// The first failure that may pass, which the round reports.
    first_error: Option<RelayError>,
}

impl<'r> Round<'r> {
    /// Whether a row of the same key failed earlier in the round.
    fn blocked(&self, row: &OutboxRow) -> bool {
        self.failed_from.contains_key(row.key.as_str())
    }

    /// A row that failed for a reason that may pass.
    fn failed(&mut self, row: &'r OutboxRow, error: RelayError) {
        self.stop_key_at(row);
        self.first_error.get_or_insert(error);
    }

    /// A row the broker will never take.
    fn refused(&mut self, row: &'r OutboxRow, error: &KafkaError) {
        self.stop_key_at(row);
        self.parked.push((row.id, error.to_string()));
    }

    fn stop_key_at(&mut self, row: &'r OutboxRow) {
        let first = self.failed_from.entry(&row.key).or_insert(row.id);
        *first = (*first).min(row.id);
    }

    /// The ids of the delivered rows that may be marked sent: those before their key's
    /// first failure.
    fn sendable(&self, delivered: &[&OutboxRow]) -> Vec<i64> {
        delivered
            .iter()
            .filter(|row| {
                self.failed_from
                    .get(row.key.as_str())
                    .is_none_or(|first| row.id < *first)
            })
            .map(|row| row.id)
            .collect()
    }
}

/// A row's Kafka headers and its publish span: a span of its own in the trace of the work
/// that wrote the row, whose context the message carries.
fn message_of(row: &OutboxRow) -> (OwnedHeaders, tracing::Span) {
    // Headers this service wrote itself; if they cannot be read the row still goes, without
    // them, and the log says so rather than dropping them unseen.
    let mut headers: BTreeMap<String, String> =
        serde_json::from_str(&row.headers).unwrap_or_else(|error| {
            tracing::warn!(outbox_id = row.id, %error, "an outbox row's headers cannot be read; publishing it without them");
            BTreeMap::new()
        });
    let span = tracing::info_span!(
        parent: None,
        "publish",
        otel.name = %format!("{} publish", row.topic),
        otel.kind = "producer",
        outbox_id = row.id,
        key = %row.key,
    );
    let stored = headers
        .get(HEADER_TRACEPARENT)
        .and_then(|h| TraceContext::parse(h));
    let trace = kit::trace::continue_in(&span, stored);
    headers.insert(HEADER_TRACEPARENT.to_owned(), trace.header());
    let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.len());
    for (name, value) in &headers {
        kafka_headers = kafka_headers.insert(Header {
            key: name,
            value: Some(value),
        });
    }
    (kafka_headers, span)
}

/// Rounds failed in a row before the relay reports itself not ready.
const FAILURES_BEFORE_NOT_READY: u32 = 3;

impl Relay {
    /// The relay of a service, known in the lease table as `instance`.
    pub fn new(parts: &crate::parts::Parts, settings: RelaySettings, instance: String) -> Self {
        Relay {
            db: parts.db.clone(),
            producer: parts.producer.clone(),
            outbox: parts.outbox.clone(),
            settings,
            metrics: parts.metrics.clone(),
            health: parts.health.clone(),
            instance,
            held_until: AtomicI64::new(0),
            renew_margin: kit::duration::as_millis_i64(parts.kafka.publish_round_bound()),
            unmarked: std::sync::Mutex::default(),
        }
    }

    /// Runs until `shutdown`, publishing whenever woken and at every poll interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = self.settings.poll_interval;
        self.health.up(HEALTH_PART);
        let mut failures = 0u32;
        loop {
            match self.publish_pending(&shutdown).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(failures, "the outbox relay publishes again");
                    }
                    failures = 0;
                    self.health.up(HEALTH_PART);
                }
                Err(error) => {
                    failures += 1;
                    self.metrics.relay_failures.inc();
                    if self.replace_producer_after(&error, failures).await {
                        continue;
                    }
                    let delay = kit::backoff::delay(failures);
                    tracing::warn!(error = %error, failures, ?delay, "outbox relay failed; retrying");
                    if failures >= FAILURES_BEFORE_NOT_READY {
                        // Readiness is public: it says what, the log (above) says why.
                        self.health.failing(
                            HEALTH_PART,
                            "cannot publish to the broker (the log says why)",
                        );
                    }
                    if !kit::backoff::pause(delay, &shutdown).await {
                        break;
                    }
                    continue;
                }
            }
            let mark_at = self.mark_at();
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.outbox.woken() => {}
                () = tokio::time::sleep(poll) => {}
                () = kit::wake::due(mark_at) => {}
            }
        }
        // Rows published and not yet marked would only go again; mark them while the lease
        // is still ours.
        if let Some(Err(error)) = kit::db::bounded(self.mark_unmarked()).await {
            tracing::debug!(%error, "could not mark the last published rows; they go again");
        }
        self.release_lease().await;
    }

    /// Replaces the producer when a failed round shows it cannot publish any more, in one of
    /// three ways; `true` when the relay should try again at once with the new one.
    /// - After a fatal error, at once.
    /// - Forgotten by the broker (a stale producer id or epoch), replaced, but the round still
    ///   waits its backoff: a broker that forgets every producer must not make the relay spin.
    /// - Cut off from a broker that others reach, every few failures, at once.
    async fn replace_producer_after(&self, error: &RelayError, failures: u32) -> bool {
        if self.replace_fatal_producer() {
            return true;
        }
        if let RelayError::Kafka(kafka) = error
            && matches!(self.producer.replace_if_stale(kafka), Ok(true))
        {
            tracing::warn!(%error, "the broker forgot the producer; publishing with a new one");
        }
        failures.is_multiple_of(FAILURES_BEFORE_NOT_READY) && self.replace_cut_off_producer().await
    }

    /// Gives the lease up on a clean stop, so that another replica takes over publishing at
    /// once instead of after the lease runs out.
    async fn release_lease(&self) {
        self.held_until.store(0, Ordering::SeqCst);
        let released = sqlx::query(
            "UPDATE outbox_relay_lease SET expires_at = 0 WHERE name = $2 AND holder = $1",
        )
        .bind(&self.instance)
        .bind(LEASE)
        .execute(&self.db)
        .await;
        if let Err(error) = released {
            tracing::debug!(%error, "could not give the relay lease up; it runs out by itself");
        }
    }

    /// When the producer hit a fatal error, reports it and puts a new producer in its place;
    /// `true` if it did.
    fn replace_fatal_producer(&self) -> bool {
        let Some(fatal) = self.producer.fatal() else {
            return false;
        };
        tracing::error!(%fatal, "the producer hit a fatal error; replacing it");
        self.health
            .failing(HEALTH_PART, "the producer hit a fatal error; replacing it");
        self.producer.replace_if_fatal().is_ok()
    }

    /// When the producer cannot reach a broker that others can, puts a new producer in its
    /// place; `true` if it did.
    async fn replace_cut_off_producer(&self) -> bool {
        let producer = self.producer.clone();
        matches!(
            tokio::task::spawn_blocking(move || producer.replace_if_cut_off()).await,
            Ok(Ok(true))
        )
    }

    /// Publishes every unsent row, batch by batch, if this relay holds the lease.
    async fn publish_pending(&self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        // Every step is bounded, so that a database connection whose server vanished without
        // closing it cannot hang the relay (or the shutdown that waits for it) forever.
        let stalled = || RelayError::Stalled(kit::db::work_timeout());
        if self
            .mark_at()
            .is_some_and(|at| at <= tokio::time::Instant::now())
        {
            kit::db::bounded(self.mark_unmarked())
                .await
                .ok_or_else(stalled)??;
        }
        while kit::db::bounded(self.hold_lease())
            .await
            .ok_or_else(stalled)??
        {
            let rows = kit::db::bounded(self.unsent_rows())
                .await
                .ok_or_else(stalled)??;
            if rows.is_empty() {
                break;
            }
            let span = tracing::debug_span!("outbox.publish", rows = rows.len());
            let full = rows.len() as i64 >= self.settings.batch_size;
            let round = std::time::Duration::from_millis(self.renew_margin.max(0) as u64);
            let bound = round + kit::db::work_timeout();
            tokio::time::timeout(bound, self.publish(rows, shutdown).instrument(span))
                .await
                .map_err(|_| RelayError::Stalled(bound))??;
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// Takes or renews the lease; `false` when another live relay holds it. While more than
    /// the renewal margin of a lease it holds is left, it writes nothing: nobody else can
    /// take the lease before it runs out.
    async fn hold_lease(&self) -> Result<bool, RelayError> {
        let now = now_ms();
        if self.held_until.load(Ordering::SeqCst) - now > self.renew_margin {
            return Ok(true);
        }
        let until = now + kit::duration::as_millis_i64(self.settings.lease);
        let taken = sqlx::query(
            "UPDATE outbox_relay_lease SET holder = $1, expires_at = $2 \
             WHERE name = $4 AND (holder = $1 OR expires_at < $3)",
        )
        .bind(&self.instance)
        .bind(until)
        .bind(now)
        .bind(LEASE)
        .execute(&self.db)
        .await?
        .rows_affected();
        self.held_until
            .store(if taken == 1 { until } else { 0 }, Ordering::SeqCst);
        if taken != 1 {
            // Another relay holds the lease: it publishes these rows again and marks them.
            self.forget_unmarked();
        }
        Ok(taken == 1)
    }

    /// The next unsent rows, in order. A key with a parked row is held back whole: its later
    /// rows wait behind the parked one, as they would behind any row not yet published, so
    /// that a consumer never sees a key's events out of order (an `OrderCancelled` before the
    /// `OrderCreated` it follows). The parked row and the backlog behind it show in
    /// `outbox_parked` and `outbox_oldest_unsent_age_seconds` until an operator acts.
    ///
    /// A plain read, not a claim: only the holder of the relay lease reads and publishes, so
    /// no other relay takes the same rows meanwhile. Rows this relay published and has not
    /// marked yet are left out.
    async fn unsent_rows(&self) -> Result<Vec<OutboxRow>, RelayError> {
        let skip: std::collections::HashSet<i64> =
            self.lock_unmarked().ids.iter().copied().collect();
        let rows = sqlx::query(
            "SELECT id, topic, message_key, payload, headers, created_at FROM outbox_message o \
             WHERE sent_at IS NULL AND parked_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM outbox_message p WHERE p.parked_at IS NOT NULL \
                             AND p.message_key = o.message_key AND p.topic = o.topic) \
             ORDER BY id LIMIT $1",
        )
        .bind(self.settings.batch_size + skip.len() as i64)
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
                    created_at: row.try_get("created_at")?,
                })
            })
            // An error is kept, to fail the read as any other.
            .filter(|row| row.as_ref().map_or(true, |row| !skip.contains(&row.id)))
            .take(usize::try_from(self.settings.batch_size).unwrap_or(usize::MAX))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(RelayError::from)
    }

    /// Hands the rows to the producer in order, then waits for every delivery report and
    /// marks the delivered rows sent. A row that failed stays unsent and is tried again, and
    /// so does every later row of its key, even one the broker took: it goes again after the
    /// failed one, and consumers deduplicate the copy. A row the broker refuses for good is
    /// parked.
    async fn publish(
        &self,
        rows: Vec<OutboxRow>,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut round = Round::default();
        let Some(pending) = self.hand_over(&rows, &mut round, shutdown).await else {
            return Ok(());
        };
        let Some(delivered) = self.await_reports(pending, &mut round, shutdown).await else {
            return Ok(());
        };
        let sent = round.sendable(&delivered);
        self.metrics.outbox_published.inc_by(sent.len() as u64);
        if self.remember_unmarked(&sent) >= self.settings.batch_size as usize {
            self.mark_unmarked().await?;
        }
        for (id, reason) in &round.parked {
            self.park(*id, reason).await?;
        }
        match round.first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Enqueues each row's message with the producer, in order, skipping the rows of a key
    /// that failed earlier in the round; `None` if shutdown came while librdkafka's queue was
    /// full.
    async fn hand_over<'r>(
        &self,
        rows: &'r [OutboxRow],
        round: &mut Round<'r>,
        shutdown: &CancellationToken,
    ) -> Option<Vec<Pending<'r>>> {
        let producer = self.producer.get();
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            if round.blocked(row) {
                continue;
            }
            let (headers, span) = message_of(row);
            let mut record = Record::to(&row.topic)
                .key(row.key.as_bytes())
                .payload(row.payload.as_bytes())
                .headers(headers);
            // Enqueue in order; only when librdkafka's queue is full, wait in place for what
            // is in flight to make room.
            loop {
                match producer.enqueue(record) {
                    Ok(delivery) => {
                        pending.push((row, delivery, span));
                        break;
                    }
                    Err((error, returned))
                        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        record = returned;
                        tokio::select! {
                            () = shutdown.cancelled() => return None,
                            () = tokio::time::sleep(Duration::from_millis(5)) => {}
                        }
                    }
                    Err((error, _)) if never_publishable(&error) => {
                        // The key's later rows wait behind the parked one (see `unsent_rows`).
                        round.refused(row, &error);
                        break;
                    }
                    Err((error, _)) => {
                        round.failed(row, RelayError::Kafka(error));
                        break;
                    }
                }
            }
        }
        Some(pending)
    }

    /// Waits for the broker's report on each message handed over; the rows it took, or
    /// `None` if shutdown came first.
    async fn await_reports<'r>(
        &self,
        pending: Vec<Pending<'r>>,
        round: &mut Round<'r>,
        shutdown: &CancellationToken,
    ) -> Option<Vec<&'r OutboxRow>> {
        let mut delivered = Vec::with_capacity(pending.len());
        for (row, delivery, _span) in pending {
            // The publish span ends with the broker's report, when `_span` is dropped.
            let report = tokio::select! {
                () = shutdown.cancelled() => return None,
                report = delivery => report,
            };
            match report {
                Ok(Ok(_)) => {
                    let delay_ms = now_ms().saturating_sub(row.created_at).max(0);
                    let delay = delay_ms as f64 / 1000.0;
                    self.metrics.outbox_publish_delay.observe(delay);
                    delivered.push(row);
                }
                // Later rows of its key are not marked sent; they wait behind it.
                Ok(Err(error)) if never_publishable(&error) => round.refused(row, &error),
                Ok(Err(error)) => round.failed(row, RelayError::Kafka(error)),
                Err(_canceled) => round.failed(row, RelayError::ProducerGone),
            }
        }
        Some(delivered)
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
        self.metrics.outbox_parked_total.inc();
        Ok(())
    }

    fn lock_unmarked(&self) -> std::sync::MutexGuard<'_, Unmarked> {
        self.unmarked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers rows published and not marked yet; how many there are now.
    fn remember_unmarked(&self, ids: &[i64]) -> usize {
        let mut unmarked = self.lock_unmarked();
        if !ids.is_empty() && unmarked.since.is_none() {
            unmarked.since = Some(tokio::time::Instant::now());
        }
        unmarked.ids.extend_from_slice(ids);
        unmarked.ids.len()
    }

    /// Forgets the rows published and not marked: this relay can no longer mark them.
    fn forget_unmarked(&self) {
        *self.lock_unmarked() = Unmarked::default();
    }

    /// When the rows published and not yet marked are due to be marked, if there are any.
    fn mark_at(&self) -> Option<tokio::time::Instant> {
        self.lock_unmarked().since.map(|since| since + MARK_WITHIN)
    }

    /// Marks every row published and not marked yet. Should it fail, they stay remembered and
    /// are marked later; should the lease be lost, they are forgotten, for the new holder.
    async fn mark_unmarked(&self) -> Result<(), RelayError> {
        let ids = self.lock_unmarked().ids.clone();
        match self.mark_sent(&ids).await {
            Ok(()) => {
                let mut unmarked = self.lock_unmarked();
                unmarked.ids.drain(..ids.len());
                unmarked.since = (!unmarked.ids.is_empty()).then(tokio::time::Instant::now);
                Ok(())
            }
            Err(RelayError::LeaseLost) => {
                self.forget_unmarked();
                Err(RelayError::LeaseLost)
            }
            Err(error) => Err(error),
        }
    }

    /// Marks rows sent, but only while this relay holds the lease: a relay that lost it (it
    /// stalled past the lease, and another took over) leaves them to the new holder, which
    /// publishes them again.
    async fn mark_sent(&self, ids: &[i64]) -> Result<(), RelayError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox_message SET sent_at = $1 WHERE id IN ({}) AND EXISTS \
             (SELECT 1 FROM outbox_relay_lease WHERE name = $3 AND holder = $2)",
            placeholders(4, ids.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(now_ms())
            .bind(&self.instance)
            .bind(LEASE);
        for id in ids {
            query = query.bind(*id);
        }
        let marked = query.execute(&self.db).await?.rows_affected();
        if marked == 0 {
            self.held_until.store(0, Ordering::SeqCst);
            return Err(RelayError::LeaseLost);
        }
        Ok(())
    }
}

/// How many outbox rows are committed but not yet marked sent (parked rows excluded): those
/// the broker has not acknowledged, and for up to [`MARK_WITHIN`] those it has.
pub async fn backlog(db: &Db) -> Result<i64, sqlx::Error> {
    Ok(unsent(db).await?.rows)
}

/// The rows committed and not yet marked sent (parked rows excluded), as [`backlog`] counts
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsent {
    pub rows: i64,
    /// How long, in milliseconds, the oldest of them has waited; 0 when none waits.
    pub oldest_age_ms: i64,
}

/// The backlog and the age of its oldest row, in one look at the table.
pub async fn unsent(db: &Db) -> Result<Unsent, sqlx::Error> {
    let (rows, oldest): (i64, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), MIN(created_at) FROM outbox_message \
         WHERE sent_at IS NULL AND parked_at IS NULL",
    )
    .fetch_one(db)
    .await?;
    let oldest_age_ms = oldest.map_or(0, |created| now_ms().saturating_sub(created).max(0));
    Ok(Unsent {
        rows,
        oldest_age_ms,
    })
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
    #[error("a round took longer than {0:?}; given up, to be tried again")]
    Stalled(std::time::Duration),
    #[error("the broker did not acknowledge a message: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the producer went away before reporting delivery")]
    ProducerGone,
    #[error("another relay took the lease; it publishes these rows again")]
    LeaseLost,
}
