//! The idempotent consumer: how every service handles the events it consumes.
//!
//! For each message, in partition order:
//! 1. Decode it. A message that cannot be decoded can never be processed: it goes to the
//!    service's dead-letter topic ([`crate::dlq`]) with the reason, so that it never blocks its
//!    partition and is never lost. An event type the contract does not know is skipped.
//! 2. In one transaction, insert the event id into `processed_event` (`ON CONFLICT DO
//!    NOTHING`) and apply the [`Handler`]'s effect, outbox rows included. If the id was already
//!    there, the event was handled before: roll back and change nothing.
//! 3. Commit, wake the outbox relay, and only then store the offset, which the consumer's
//!    periodic commit sends to the broker. A crash before the store means redelivery, which
//!    step 2 makes harmless.
//!
//! A transient failure (database down, deadlock) is retried with backoff, never skipped. A
//! handler that finds the event can never be applied says so ([`HandleError::Permanent`]),
//! and the message goes to the dead-letter topic too.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use contract::topics::HEADER_TRACEPARENT;
use contract::{Decoded, Envelope};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::{Conn, Db, now_ms};
use crate::dlq::DeadLetters;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::trace::TraceContext;

/// An event as a handler sees it: the decoded envelope and where it came from.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub envelope: Envelope,
    /// The trace the event belongs to; events the handler causes continue it.
    pub trace: TraceContext,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Inbound {
    /// Writes `event` to the outbox as this service's answer to the inbound event: caused by
    /// it, and in its trace.
    pub async fn emit(
        &self,
        conn: &mut Conn,
        producer: &str,
        event: impl Into<contract::Event>,
    ) -> Result<(), sqlx::Error> {
        let envelope = Envelope::new(producer, event, Some(self.envelope.event_id));
        crate::outbox::enqueue(conn, &envelope, &self.trace).await
    }
}

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying: the same event may succeed later (database unavailable, deadlock).
    #[error("transient failure: {0}")]
    Transient(#[source] anyhow::Error),
    /// Will never succeed: the message goes to the dead-letter topic.
    #[error("the event can never be applied: {0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandleError {
    fn from(error: sqlx::Error) -> Self {
        HandleError::Transient(error.into())
    }
}

/// What a service does with one event, inside the transaction that records it as handled.
///
/// Everything the handler writes, outbox rows included, commits or rolls back with the record
/// of the event, so the handler itself needs no idempotency bookkeeping for redelivery. It
/// still has to cope with events arriving in any order across topics.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        conn: &mut Conn,
        event: &Inbound,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// Runs one consumer: reads, handles and stores offsets until shutdown.
pub struct ConsumerRunner<H> {
    name: &'static str,
    consumer: Arc<StreamConsumer>,
    /// The last offset stored per partition, for the lag gauge.
    stored: Arc<Mutex<HashMap<(String, i32), i64>>>,
    db: Db,
    outbox: Outbox,
    handler: H,
    metrics: Metrics,
    dead_letters: DeadLetters,
    lag_interval: std::time::Duration,
}

/// What became of one attempt at one message.
enum Outcome {
    Handled,
    Duplicate,
}

/// What to do with a message once processing it has ended.
enum Disposition {
    /// Done with it: store its offset.
    Done,
    /// It can never be processed: dead-letter it, then store its offset.
    DeadLetter(String),
    /// Shutdown came first: leave its offset, so it is consumed again.
    Interrupted,
}

impl<H: Handler> ConsumerRunner<H> {
    /// A runner of `runtime`'s service over an already subscribed consumer.
    pub fn new(consumer: StreamConsumer, handler: H, runtime: &crate::app::Runtime) -> Self {
        ConsumerRunner {
            name: runtime.name,
            consumer: Arc::new(consumer),
            stored: Arc::default(),
            db: runtime.db.clone(),
            outbox: runtime.outbox.clone(),
            handler,
            metrics: runtime.metrics.clone(),
            dead_letters: DeadLetters::new(runtime.producer.clone(), runtime.name),
            lag_interval: std::time::Duration::from_millis(runtime.settings.kafka.lag_interval_ms),
        }
    }

    /// Consumes until `shutdown`, then commits the offsets of everything it finished.
    pub async fn run(self, shutdown: CancellationToken) {
        let lag = tokio::spawn(report_lag(
            self.name,
            self.consumer.clone(),
            self.stored.clone(),
            self.metrics.clone(),
            self.lag_interval,
            shutdown.clone(),
        ));
        let mut receive_failures = 0u32;
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => {
                    receive_failures = 0;
                    message.detach()
                }
                Err(error) => {
                    receive_failures += 1;
                    tracing::warn!(consumer = self.name, %error, "could not receive a message");
                    tokio::time::sleep(crate::backoff::delay(receive_failures)).await;
                    continue;
                }
            };
            let handled = match self.process(&message, &shutdown).await {
                Disposition::Done => true,
                Disposition::DeadLetter(reason) => {
                    self.dead_letter(&message, &reason, &shutdown).await
                }
                Disposition::Interrupted => false,
            };
            if !handled {
                break;
            }
            if let Err(error) =
                self.consumer
                    .store_offset(message.topic(), message.partition(), message.offset())
            {
                tracing::warn!(consumer = self.name, %error, "could not store an offset");
            }
            let partition = (message.topic().to_owned(), message.partition());
            self.lock_stored().insert(partition, message.offset());
        }
        let _ = lag.await;
        close(self.name, self.consumer).await;
    }

    fn lock_stored(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), i64>> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one message until it is done, or known to be undeliverable, or shutdown comes.
    async fn process(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> Disposition {
        let payload = message.payload().unwrap_or_default();
        let envelope = match Envelope::decode(payload) {
            Ok(Decoded::Known(envelope)) => envelope,
            Ok(Decoded::Unknown {
                event_type,
                event_id,
            }) => {
                tracing::debug!(consumer = self.name, %event_type, %event_id, "ignoring an event type this service does not handle");
                self.metrics
                    .inc("events_ignored_total", &[("consumer", self.name)]);
                return Disposition::Done;
            }
            Err(error) => return Disposition::DeadLetter(error.to_string()),
        };
        let inbound = Inbound {
            trace: TraceContext::continue_or_new(header(message, HEADER_TRACEPARENT).as_deref()),
            envelope,
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let span = tracing::info_span!(
            "event",
            consumer = self.name,
            event_type = inbound.envelope.event_type(),
            event_id = %inbound.envelope.event_id,
            key = %inbound.envelope.key(),
            trace_id = %inbound.trace.trace_id(),
            topic = %inbound.topic,
            partition = inbound.partition,
            offset = inbound.offset,
        );
        self.process_until_done(&inbound, shutdown)
            .instrument(span)
            .await
    }

    async fn process_until_done(
        &self,
        inbound: &Inbound,
        shutdown: &CancellationToken,
    ) -> Disposition {
        let event_type = inbound.envelope.event_type();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.apply(inbound).await {
                Ok(Outcome::Handled) => {
                    tracing::debug!("handled");
                    self.metrics.inc(
                        "events_handled_total",
                        &[("consumer", self.name), ("event_type", event_type)],
                    );
                    return Disposition::Done;
                }
                Ok(Outcome::Duplicate) => {
                    tracing::debug!("already handled; nothing to do");
                    self.metrics.inc(
                        "events_duplicate_total",
                        &[("consumer", self.name), ("event_type", event_type)],
                    );
                    return Disposition::Done;
                }
                Err(HandleError::Permanent(reason)) => return Disposition::DeadLetter(reason),
                Err(HandleError::Transient(error)) => {
                    let delay = crate::backoff::delay(attempt);
                    tracing::warn!(
                        error = format!("{error:#}"),
                        attempt,
                        ?delay,
                        "handling failed; retrying"
                    );
                    self.metrics.inc(
                        "events_retried_total",
                        &[("consumer", self.name), ("event_type", event_type)],
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return Disposition::Interrupted,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Publishes a message that can never be processed to the dead-letter topic, retrying
    /// until the broker takes it: it is never dropped. `false` if shutdown came first.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        tracing::error!(
            consumer = self.name,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            dlq = self.dead_letters.topic(),
            "a message that can never be processed goes to the dead-letter topic"
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.dead_letters.send(message, reason).await {
                Ok(()) => {
                    self.metrics
                        .inc("events_dead_lettered_total", &[("consumer", self.name)]);
                    return true;
                }
                Err(error) => {
                    let delay = crate::backoff::delay(attempt);
                    tracing::warn!(%error, ?delay, "could not publish a dead letter; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One attempt: record the event and apply its effect in one transaction.
    async fn apply(&self, inbound: &Inbound) -> Result<Outcome, HandleError> {
        let mut tx = crate::db::begin(&self.db).await?;
        let first_time = sqlx::query(
            "INSERT INTO processed_event (event_id, event_type, topic, processed_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(inbound.envelope.event_id.to_string())
        .bind(inbound.envelope.event_type())
        .bind(&inbound.topic)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first_time {
            tx.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        self.handler.handle(&mut tx, inbound).await?;
        tx.commit().await?;
        self.outbox.wake();
        Ok(Outcome::Handled)
    }
}

/// Sets `consumer_lag{consumer, topic, partition}`: messages on each assigned partition after
/// the last one this consumer finished. Asking the broker for the partitions' ends blocks, so
/// it runs on the blocking pool.
async fn report_lag(
    name: &'static str,
    consumer: Arc<StreamConsumer>,
    stored: Arc<Mutex<HashMap<(String, i32), i64>>>,
    metrics: Metrics,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    crate::app::every(interval, shutdown, || {
        let (consumer, stored, metrics) = (consumer.clone(), stored.clone(), metrics.clone());
        async move {
            let _ = tokio::task::spawn_blocking(move || {
                let Ok(assignment) = consumer.assignment() else {
                    return;
                };
                for element in assignment.elements() {
                    let (topic, partition) = (element.topic(), element.partition());
                    let Ok((low, high)) = consumer.fetch_watermarks(
                        topic,
                        partition,
                        std::time::Duration::from_secs(2),
                    ) else {
                        continue;
                    };
                    let done = stored
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&(topic.to_owned(), partition))
                        .map_or(low, |offset| offset + 1);
                    let labels = [
                        ("consumer", name),
                        ("topic", topic),
                        ("partition", &partition.to_string()),
                    ];
                    metrics.set("consumer_lag", &labels, (high - done).max(0) as f64);
                }
            })
            .await;
        }
    })
    .await;
}

/// Longest a consumer may take to commit its offsets and leave its group on shutdown.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Commits the stored offsets and closes the consumer, which leaves the group so that its
/// partitions move to other members at once. librdkafka blocks while doing so, and blocks
/// for as long as the broker is unreachable; it runs on a thread of its own, and shutdown
/// goes on without it after [`CLOSE_TIMEOUT`]: uncommitted offsets only mean redelivery,
/// which the processed-event record absorbs.
async fn close(name: &'static str, consumer: Arc<StreamConsumer>) {
    let (done, closed) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-close"))
        .spawn(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::debug!(consumer = name, "committed offsets on shutdown"),
                Err(error) => {
                    tracing::debug!(consumer = name, %error, "no offsets committed on shutdown")
                }
            }
            drop(consumer);
            let _ = done.send(());
        });
    if spawned.is_err() {
        tracing::warn!(
            consumer = name,
            "could not start a thread to close the consumer"
        );
        return;
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
        tracing::warn!(
            consumer = name,
            "the consumer did not close in time (is the broker down?); going on without it"
        );
    }
}

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}
