//! The producer every service publishes with: librdkafka's producer, whose delivery reports a
//! thread of ours hands to futures.
//!
//! rust-rdkafka's `FutureProducer` does the same with a thread that waits for librdkafka's
//! events 100 ms at a time, and in the last millisecond of every wait asks again and again
//! without waiting, because it rounds the time left down to whole milliseconds. An idle
//! service spent most of its CPU there: 18 of its 27 clock ticks in 30 s, 0.6 % of a core
//! (release build, `scripts/bench-idle.sh`). This thread waits a second at a time, so it spins
//! that last millisecond once a second instead of ten times. How long it waits changes
//! nothing else: a report is handed over as soon as librdkafka has it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use super::context::ClientState;

/// How long the reporting thread waits for librdkafka's events at a time; also how long it
/// outlives the last handle on its producer.
const REPORT_WAIT: Duration = Duration::from_secs(1);

/// How long [`Producer::send`] waits between tries while librdkafka's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// Where a message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// The broker's report on one message: awaited, it gives `Ok(Ok(delivered))`, `Ok(Err(..))`
/// when the message failed, or `Err(Canceled)` when the producer went away first.
pub type Delivery = oneshot::Receiver<Result<Delivered, KafkaError>>;

/// One message to publish: its topic, and optionally a partition, key, value and headers.
#[derive(Debug)]
pub struct Record<'a> {
    pub topic: &'a str,
    /// The partition; by default the key's (librdkafka's partitioner, as Kafka's clients).
    pub partition: Option<i32>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Option<OwnedHeaders>,
}

impl<'a> Record<'a> {
    /// A message to `topic` with no key, value or headers yet.
    pub fn to(topic: &'a str) -> Self {
        Record {
            topic,
            partition: None,
            key: None,
            payload: None,
            headers: None,
        }
    }

    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    pub fn payload(mut self, payload: &'a [u8]) -> Self {
        self.payload = Some(payload);
        self
    }

    pub fn headers(mut self, headers: OwnedHeaders) -> Self {
        self.headers = Some(headers);
        self
    }

    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// A producer; clones share one librdkafka client.
#[derive(Clone)]
pub struct Producer {
    base: Arc<BaseProducer<Reporting>>,
    /// Tells the reporting thread to end when the last clone goes.
    _reporter: Arc<Reporter>,
}

impl Producer {
    /// Creates the client from `config` and starts its reporting thread.
    pub(super) fn create(config: &ClientConfig, state: ClientState) -> KafkaResult<Self> {
        let base: Arc<BaseProducer<Reporting>> =
            Arc::new(config.create_with_context(Reporting(state))?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (base.clone(), stop.clone());
        std::thread::Builder::new()
            .name("producer-reports".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(REPORT_WAIT);
                }
            })
            .map_err(|error| KafkaError::ClientCreation(error.to_string()))?;
        Ok(Producer {
            base,
            _reporter: Arc::new(Reporter(stop)),
        })
    }

    /// Hands `record` to librdkafka, which sends it in the background; the returned
    /// [`Delivery`] resolves with the broker's report. When librdkafka refuses it at once
    /// (its queue is full, say), the record comes back with the error.
    // The record comes back by value, as librdkafka's own API returns it: boxing it would
    // cost an allocation per message for the rare refusal.
    #[allow(clippy::result_large_err)]
    pub fn enqueue<'a>(&self, record: Record<'a>) -> Result<Delivery, (KafkaError, Record<'a>)> {
        let (reply, delivery) = oneshot::channel();
        let mut base =
            BaseRecord::<[u8], [u8], Box<Reply>>::with_opaque_to(record.topic, Box::new(reply));
        base.partition = record.partition;
        base.key = record.key;
        base.payload = record.payload;
        base.headers = record.headers;
        self.base
            .send(base)
            .map(|()| delivery)
            .map_err(|(error, base)| {
                let record = Record {
                    topic: base.topic,
                    partition: base.partition,
                    key: base.key,
                    payload: base.payload,
                    headers: base.headers,
                };
                (error, record)
            })
    }

    /// Publishes `record` and waits for the broker's report. While librdkafka's queue is
    /// full it tries again, for up to `queue_timeout`.
    pub async fn send(
        &self,
        record: Record<'_>,
        queue_timeout: Duration,
    ) -> Result<Delivered, KafkaError> {
        let deadline = Instant::now() + queue_timeout;
        let mut record = record;
        let delivery = loop {
            match self.enqueue(record) {
                Ok(delivery) => break delivery,
                Err((error, returned))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                        && Instant::now() < deadline =>
                {
                    record = returned;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, _)) => return Err(error),
            }
        };
        delivery.await.unwrap_or(Err(KafkaError::Canceled))
    }

    /// Waits until every message handed over has its report, or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.base.flush(timeout)
    }

    /// The librdkafka client underneath.
    pub fn client(&self) -> &Client<Reporting> {
        self.base.client()
    }
}

/// Ends the reporting thread when dropped; it then drops its handle on the client within
/// [`REPORT_WAIT`], on its own thread, since dropping a client waits for its threads.
struct Reporter(Arc<AtomicBool>);

impl Drop for Reporter {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Where a message's report goes.
type Reply = oneshot::Sender<Result<Delivered, KafkaError>>;

/// The producer's context: a service's [`ClientState`] for logs and errors, and the delivery
/// reports handed to their futures.
pub struct Reporting(ClientState);

impl ClientContext for Reporting {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }

    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.0.stats(statistics);
    }
}

impl ProducerContext for Reporting {
    type DeliveryOpaque = Box<Reply>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Box<Reply>) {
        let report = match result {
            Ok(message) => Ok(Delivered {
                partition: message.partition(),
                offset: message.offset(),
            }),
            Err((error, _)) => Err(error.clone()),
        };
        // Nobody waits any more when the publisher gave up (a shutdown): nothing to do.
        let _ = reply.send(report);
    }
}
