//! Dead-letter topics: where a consumer puts a message it can never process, so that its
//! partition moves on and nothing is lost.
//!
//! A dead letter is the original message (key, value and headers unchanged) published to
//! `<service>.dlq`, with headers that say why and where from. `shopctl dlq list` shows them;
//! `shopctl dlq replay` publishes them back to their source topic once the cause is fixed.
//! Replaying is safe to repeat: consumers deduplicate by event id. Nothing a letter says is
//! trusted: it goes back only to a topic its service consumes, and only if the source offset
//! it names holds the same message ([`replay`]). Each replay is recorded on the dead-letter
//! topic itself ([`HEADER_REPLAYED`]), so that replaying all of them skips those done.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};

use crate::kafka::{Record, SharedProducer};
use kit::db::Db;

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
/// Where it failed: a [`Stage`], by its wire name.
pub const HEADER_STAGE: &str = "dlq.stage";

/// Where a message failed, as its letter's `dlq.stage` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The consumer could not decode or apply the message; replay republishes it.
    Consume,
    /// The analytics forwarder could not deliver the event; replay retries the delivery.
    Deliver,
}

impl Stage {
    /// The header's value: `consume` or `deliver`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Consume => "consume",
            Stage::Deliver => "deliver",
        }
    }

    /// The stage of a header's value; `None` for anything else (a letter written by hand).
    pub fn parse(value: &str) -> Option<Stage> {
        [Stage::Consume, Stage::Deliver]
            .into_iter()
            .find(|stage| stage.as_str() == value)
    }
}

/// Whether a header is one this module adds (and replay removes).
pub fn is_dlq_header(name: &str) -> bool {
    name.starts_with("dlq.")
}

/// How much of the reason a trimmed dead letter keeps, in bytes.
const TRIMMED_ERROR_BYTES: usize = 256;

/// What became of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filed {
    /// On the dead-letter topic as it was.
    Published,
    /// On the dead-letter topic with its reason cut short: the broker refused it whole.
    Trimmed,
    /// The broker refuses it even trimmed (the message itself is too large): kept in the
    /// service's own `dead_letter` table, logged and counted (`dead_letters_parked`).
    Parked,
}

/// Why a dead letter could not be filed yet; worth trying again (the broker or the database
/// is down).
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("the broker did not take the dead letter: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the dead letter could not be parked in the database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Publishes a service's dead letters.
#[derive(Clone)]
pub struct DeadLetters {
    producer: SharedProducer,
    db: Db,
    service: &'static str,
    topic: String,
}

/// One message that can never be processed, and why.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The message's own headers (any `dlq.*` ones are dropped).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub source: Source<'a>,
    pub stage: Stage,
    pub error: &'a str,
}

impl<'a> Letter<'a> {
    /// A consumed message that cannot be processed.
    pub fn consumed(message: &'a OwnedMessage, error: &'a str) -> Self {
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Letter {
            key: message.key(),
            payload: message.payload(),
            headers,
            source: Source {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
            },
            stage: Stage::Consume,
            error,
        }
    }
}

impl DeadLetters {
    /// Dead letters of `service`, to `<service>.dlq`, parked in `db` when the broker refuses
    /// them for good.
    pub fn new(producer: SharedProducer, db: Db, service: &'static str) -> Self {
        DeadLetters {
            producer,
            db,
            service,
            topic: contract::topics::dlq_topic(service),
        }
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Files `letter`: publishes it and waits for the broker's acknowledgement; when the
    /// broker refuses it for good, publishes it again with its reason trimmed; when even that
    /// is refused, parks it in the database. An error means nothing was filed and the caller
    /// should try again later.
    pub async fn file(&self, letter: &Letter<'_>) -> Result<Filed, DlqError> {
        match self.publish(letter, letter.error).await {
            Ok(()) => return Ok(Filed::Published),
            Err(error) if !crate::kafka::never_publishable(&error) => {
                // A service without a relay (the forwarder) publishes only dead letters: a
                // producer that hit a fatal error is replaced here, so the next try can work.
                let _ = self.producer.replace_if_fatal();
                return Err(error.into());
            }
            Err(error) => {
                tracing::warn!(%error, "the broker refused a dead letter; trimming its reason")
            }
        }
        let trimmed = truncate(letter.error, TRIMMED_ERROR_BYTES);
        match self.publish(letter, trimmed).await {
            Ok(()) => return Ok(Filed::Trimmed),
            Err(error) if !crate::kafka::never_publishable(&error) => return Err(error.into()),
            Err(error) => {
                tracing::error!(%error, "the broker refuses this dead letter even trimmed; parking it in the database")
            }
        }
        self.park(letter).await?;
        Ok(Filed::Parked)
    }

    async fn publish(
        &self,
        letter: &Letter<'_>,
        error: &str,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let mut headers = OwnedHeaders::new();
        for (key, value) in letter.headers.iter().filter(|(k, _)| !is_dlq_header(k)) {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let partition = letter.source.partition.to_string();
        let offset = letter.source.offset.to_string();
        let failed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for (key, value) in [
            (HEADER_ERROR, error),
            (HEADER_SOURCE_TOPIC, letter.source.topic),
            (HEADER_SOURCE_PARTITION, partition.as_str()),
            (HEADER_SOURCE_OFFSET, offset.as_str()),
            (HEADER_FAILED_AT, failed_at.as_str()),
            (HEADER_CONSUMER, self.service),
            (HEADER_STAGE, letter.stage.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record = Record::to(&self.topic).headers(headers);
        record.key = letter.key;
        record.payload = letter.payload;
        let producer = self.producer.get();
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
    }

    /// Keeps a dead letter the broker will not take in the `dead_letter` table: key, value and
    /// headers hex-encoded, so that no byte is lost.
    async fn park(&self, letter: &Letter<'_>) -> Result<(), sqlx::Error> {
        let headers: Vec<(String, Option<String>)> = letter
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_deref().map(hex::encode)))
            .collect();
        sqlx::query(
            "INSERT INTO dead_letter (source_topic, source_partition, source_offset, stage, \
             error, message_key, payload, headers, parked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(letter.source.topic)
        .bind(i64::from(letter.source.partition))
        .bind(letter.source.offset)
        .bind(letter.stage.as_str())
        .bind(letter.error)
        .bind(letter.key.map(hex::encode))
        .bind(letter.payload.map(hex::encode))
        .bind(serde_json::to_string(&headers).expect("strings always serialize"))
        .bind(kit::db::now_ms())
        .execute(&self.db)
        .await?;
        Ok(())
    }
}

/// How many dead letters are parked in the database.
pub async fn parked(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM dead_letter")
        .fetch_one(db)
        .await
}

/// The first `most` bytes of `text`, cut at a character boundary, with an ellipsis when cut.
fn truncate(text: &str, most: usize) -> &str {
    if text.len() <= most {
        return text;
    }
    let mut end = most;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Where a dead letter was consumed from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}
