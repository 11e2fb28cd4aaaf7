//! Dead-letter topics: where a consumer puts a message it can never process, so that its
//! partition moves on and nothing is lost.
//!
//! A dead letter is the original message (key, value and headers unchanged) published to
//! `<service>.dlq`, with headers that say why and where from. `shopctl dlq list` shows them;
//! `shopctl dlq replay` publishes them back to their source topic once the cause is fixed.
//! Replaying is safe to repeat: consumers deduplicate by event id.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Why the message was dead-lettered.
pub const HEADER_ERROR: &str = "dlq.error";
/// The topic it was consumed from.
pub const HEADER_SOURCE_TOPIC: &str = "dlq.source.topic";
/// The partition it was consumed from.
pub const HEADER_SOURCE_PARTITION: &str = "dlq.source.partition";
/// Its offset in that partition.
pub const HEADER_SOURCE_OFFSET: &str = "dlq.source.offset";
/// When it was dead-lettered (RFC 3339).
pub const HEADER_FAILED_AT: &str = "dlq.failed_at";
/// The service that could not process it.
pub const HEADER_CONSUMER: &str = "dlq.consumer";
/// Where it failed: [`STAGE_CONSUME`] (the consumer could not apply it) or
/// [`STAGE_DELIVER`] (the analytics forwarder could not deliver it).
pub const HEADER_STAGE: &str = "dlq.stage";
/// The consumer could not decode or apply the message; replay republishes it.
pub const STAGE_CONSUME: &str = "consume";
/// The analytics forwarder could not deliver the event; replay retries the delivery.
pub const STAGE_DELIVER: &str = "deliver";

/// Whether a header is one this module adds (and replay removes).
pub fn is_dlq_header(name: &str) -> bool {
    name.starts_with("dlq.")
}

/// Publishes a service's dead letters.
#[derive(Clone)]
pub struct DeadLetters {
    producer: FutureProducer,
    service: &'static str,
    topic: String,
}

impl DeadLetters {
    /// Dead letters of `service`, to `<service>.dlq`.
    pub fn new(producer: FutureProducer, service: &'static str) -> Self {
        DeadLetters {
            producer,
            service,
            topic: contract::topics::dlq_topic(service),
        }
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `message` with the reason, and waits for the broker to acknowledge it.
    pub async fn send(
        &self,
        message: &OwnedMessage,
        error: &str,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let original: Vec<(String, Option<Vec<u8>>)> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let source = Source {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        self.send_parts(
            message.key(),
            message.payload(),
            &original,
            source,
            STAGE_CONSUME,
            error,
        )
        .await
    }

    /// Publishes a message this service built itself (the analytics forwarder's undeliverable
    /// events), with the reason and where it originally came from.
    pub async fn send_parts(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        original_headers: &[(String, Option<Vec<u8>>)],
        source: Source<'_>,
        stage: &str,
        error: &str,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let mut headers = OwnedHeaders::new();
        for (key, value) in original_headers.iter().filter(|(k, _)| !is_dlq_header(k)) {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let partition = source.partition.to_string();
        let offset = source.offset.to_string();
        let failed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (key, value) in [
            (HEADER_ERROR, error),
            (HEADER_SOURCE_TOPIC, source.topic),
            (HEADER_SOURCE_PARTITION, partition.as_str()),
            (HEADER_SOURCE_OFFSET, offset.as_str()),
            (HEADER_FAILED_AT, failed_at.as_str()),
            (HEADER_CONSUMER, self.service),
            (HEADER_STAGE, stage),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
    }
}

/// Where a dead letter was consumed from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// One dead letter, as `shopctl dlq list` shows it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its offset in the dead-letter topic.
    pub offset: i64,
    /// The event id, when the value is an envelope that has one.
    pub event_id: Option<String>,
    /// The `event_type` header, if the message had one.
    pub event_type: Option<String>,
    pub error: String,
    /// [`STAGE_CONSUME`] or [`STAGE_DELIVER`].
    pub stage: String,
    pub source_topic: String,
    pub source_partition: String,
    pub source_offset: String,
    pub failed_at: String,
    message: OwnedMessage,
}

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Every dead letter of `service`, oldest first. Blocking, like [`crate::kafka::read_to_end`].
pub fn list(
    settings: &crate::kafka::KafkaSettings,
    service: &str,
) -> Result<Vec<DeadLetter>, crate::kafka::ReadError> {
    let topic = contract::topics::dlq_topic(service);
    let messages = crate::kafka::read_to_end(settings, &[topic.as_str()], Duration::from_secs(60))?;
    Ok(messages
        .into_iter()
        .map(|message| {
            let event_id = message
                .payload()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .and_then(|v| v.get("event_id")?.as_str().map(str::to_owned));
            let get = |name| header(&message, name).unwrap_or_default();
            DeadLetter {
                offset: message.offset(),
                event_id,
                event_type: header(&message, contract::topics::HEADER_EVENT_TYPE),
                error: get(HEADER_ERROR),
                stage: get(HEADER_STAGE),
                source_topic: get(HEADER_SOURCE_TOPIC),
                source_partition: get(HEADER_SOURCE_PARTITION),
                source_offset: get(HEADER_SOURCE_OFFSET),
                failed_at: get(HEADER_FAILED_AT),
                message,
            }
        })
        .collect())
}

/// Publishes dead letters back to the topics they came from, exactly as they first arrived
/// (key, value, headers without the `dlq.*` ones). Safe to repeat: consumers deduplicate by
/// event id, and a message that still cannot be processed comes back to the dead-letter topic.
pub async fn replay(
    producer: &FutureProducer,
    letters: &[DeadLetter],
) -> Result<usize, rdkafka::error::KafkaError> {
    for letter in letters {
        let message = &letter.message;
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter().filter(|h| !is_dlq_header(h.key)) {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&letter.source_topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| error)?;
    }
    Ok(letters.len())
}
