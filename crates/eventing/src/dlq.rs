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
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::db::Db;
use crate::kafka::SharedProducer;

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
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        if let Some(payload) = letter.payload {
            record = record.payload(payload);
        }
        let producer = self.producer.get();
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(error, _)| error)
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
        .bind(crate::db::now_ms())
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

/// One dead letter, as `shopctl dlq list` and the console show it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its offset in the dead-letter topic.
    pub offset: i64,
    /// The event id, when the value is an envelope that has one.
    pub event_id: Option<String>,
    /// The `event_type` header, if the message had one.
    pub event_type: Option<String>,
    /// The message's key, as text (bytes that are not UTF-8 are replaced).
    pub key: Option<String>,
    /// The message's value, as text (bytes that are not UTF-8 are replaced).
    pub payload: Option<String>,
    pub error: String,
    /// Its `dlq.stage` header as written; [`DeadLetter::stage`] reads it.
    pub stage_header: String,
    pub source_topic: String,
    pub source_partition: String,
    pub source_offset: String,
    pub failed_at: String,
    /// When it was replayed, if it has been: replaying all skips it.
    pub replayed_at: Option<String>,
    message: OwnedMessage,
}

impl DeadLetter {
    /// Where it failed, if its header names a stage.
    pub fn stage(&self) -> Option<Stage> {
        Stage::parse(&self.stage_header)
    }
}

/// On a record of a replay, which this module writes to the dead-letter topic itself: the
/// offset of the letter replayed. A message with this header is a record, not a letter.
pub const HEADER_REPLAYED: &str = "dlq.replayed";
/// On a record of a replay: when it happened (RFC 3339).
pub const HEADER_REPLAYED_AT: &str = "dlq.replayed_at";
/// On a replayed message: the dead letter it is, as `<dlq topic>@<offset>`. Not a `dlq.*`
/// header, so that a replayed message that fails again carries it into its new letter.
pub const HEADER_REPLAY_OF: &str = "replay-of";

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Every dead letter of `service`, oldest first, each marked with when it was replayed, if it
/// was. Blocking, like [`crate::kafka::read_to_end`].
pub fn list(
    settings: &crate::kafka::KafkaSettings,
    service: &str,
) -> Result<Vec<DeadLetter>, crate::kafka::ReadError> {
    let topic = contract::topics::dlq_topic(service);
    let messages = crate::kafka::read_to_end(settings, &[topic.as_str()], Duration::from_secs(60))?;
    let mut replays = std::collections::HashMap::new();
    let mut letters = Vec::new();
    for message in messages {
        if let Some(offset) = header(&message, HEADER_REPLAYED) {
            let at = header(&message, HEADER_REPLAYED_AT).unwrap_or_default();
            replays.insert(offset, at);
            continue;
        }
        let event_id = message
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.get("event_id")?.as_str().map(str::to_owned));
        let get = |name| header(&message, name).unwrap_or_default();
        let text = |bytes: Option<&[u8]>| bytes.map(|b| String::from_utf8_lossy(b).into_owned());
        letters.push(DeadLetter {
            offset: message.offset(),
            event_id,
            event_type: header(&message, contract::topics::HEADER_EVENT_TYPE),
            key: text(message.key()),
            payload: text(message.payload()),
            error: get(HEADER_ERROR),
            stage_header: get(HEADER_STAGE),
            source_topic: get(HEADER_SOURCE_TOPIC),
            source_partition: get(HEADER_SOURCE_PARTITION),
            source_offset: get(HEADER_SOURCE_OFFSET),
            failed_at: get(HEADER_FAILED_AT),
            replayed_at: None,
            message,
        });
    }
    for letter in &mut letters {
        letter.replayed_at = replays.remove(&letter.offset.to_string());
    }
    Ok(letters)
}

/// What replaying one dead letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// It is back on its source topic, in the partition it came from.
    Republished { topic: String, partition: i32 },
    /// It was not put anywhere, for the reason given.
    Refused(String),
}

/// Why a replay could not be carried out; worth trying again (the broker is away).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the broker did not take the replayed message: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("could not read the message the letter names")]
    Read(#[from] crate::kafka::ReadError),
}

/// Whether `letter`, a dead letter of `service`, may go back to the topic it names, and which
/// partition: only to a topic `service` consumes, whatever its headers say, and only when the
/// event in it belongs to that topic. A letter of a delivery is retried by the forwarder,
/// never republished.
pub fn check_replay(service: &str, letter: &DeadLetter) -> Result<(String, i32, i64), String> {
    if letter.stage() == Some(Stage::Deliver) {
        return Err("a failed delivery is retried by the forwarder, not republished".into());
    }
    let topic = letter.source_topic.as_str();
    let Some(known) = contract::Service::parse(service) else {
        return Err(format!(
            "{service:?} is not a service of the contract: its letters go nowhere"
        ));
    };
    if !known.consumes().contains(&topic) {
        return Err(format!(
            "{service} does not consume {topic:?}: a dead letter goes back only to a topic its service consumes"
        ));
    }
    let (Ok(partition), Ok(offset)) = (
        letter.source_partition.parse::<i32>(),
        letter.source_offset.parse::<i64>(),
    ) else {
        return Err("the letter names no partition and offset it came from".into());
    };
    if let Ok(contract::Decoded::Known(envelope)) =
        contract::Envelope::decode(letter.message.payload().unwrap_or_default())
        && let Err(misplaced) = envelope.check_provenance(topic)
    {
        return Err(format!("it would be refused again: {misplaced}"));
    }
    Ok((topic.to_owned(), partition, offset))
}

/// Publishes dead letters of `service` back to the topics they came from, exactly as they
/// first arrived (key, value, headers without the `dlq.*` ones, plus [`HEADER_REPLAY_OF`]),
/// and records each replay on the dead-letter topic ([`mark_replayed`]).
///
/// A letter is anyone's writing: whoever may write the dead-letter topic can make one up. So
/// each goes back only where [`check_replay`] allows, and only if the message at the source
/// offset it names is the letter's own message, byte for byte: a replay never publishes
/// anything that was not on that topic already. Safe to repeat: consumers deduplicate by
/// event id, and a message that still cannot be processed comes back as a new letter.
pub async fn replay<C: rdkafka::ClientContext + 'static>(
    settings: &crate::kafka::KafkaSettings,
    producer: &FutureProducer<C>,
    service: &str,
    letters: &[DeadLetter],
) -> Result<Vec<Replayed>, ReplayError> {
    let mut outcomes = Vec::with_capacity(letters.len());
    for letter in letters {
        let (topic, partition, offset) = match check_replay(service, letter) {
            Ok(target) => target,
            Err(reason) => {
                outcomes.push(Replayed::Refused(reason));
                continue;
            }
        };
        let reader = settings.clone();
        let source = topic.clone();
        let original = tokio::task::spawn_blocking(move || {
            crate::kafka::read_at(&reader, &source, partition, offset, Duration::from_secs(10))
        })
        .await
        .map_err(|_| crate::kafka::ReadError::Timeout(vec![topic.clone()]))??;
        let message = &letter.message;
        let same = original
            .as_ref()
            .is_some_and(|o| o.key() == message.key() && o.payload() == message.payload());
        if !same {
            let why = match original {
                None => format!("{topic}/{partition}@{offset} no longer holds a message"),
                Some(_) => format!("the message at {topic}/{partition}@{offset} is not this one"),
            };
            outcomes.push(Replayed::Refused(format!(
                "{why}, so the letter cannot be shown to be what was consumed there"
            )));
            continue;
        }
        let replay_of = format!("{}@{}", contract::topics::dlq_topic(service), letter.offset);
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            let kept = original
                .iter()
                .filter(|h| !is_dlq_header(h.key) && h.key != HEADER_REPLAY_OF);
            for h in kept {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        headers = headers.insert(Header {
            key: HEADER_REPLAY_OF,
            value: Some(replay_of.as_str()),
        });
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
            .partition(partition)
            .headers(headers);
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
        mark_replayed(producer, service, letter).await?;
        outcomes.push(Replayed::Republished { topic, partition });
    }
    Ok(outcomes)
}

/// Records on `service`'s dead-letter topic that `letter` has been replayed, so that
/// replaying all of them skips it from now on.
pub async fn mark_replayed<C: rdkafka::ClientContext + 'static>(
    producer: &FutureProducer<C>,
    service: &str,
    letter: &DeadLetter,
) -> Result<(), rdkafka::error::KafkaError> {
    let offset = letter.offset.to_string();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: HEADER_REPLAYED,
            value: Some(offset.as_str()),
        })
        .insert(Header {
            key: HEADER_REPLAYED_AT,
            value: Some(at.as_str()),
        });
    let topic = contract::topics::dlq_topic(service);
    let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
    if let Some(key) = letter.message.key() {
        record = record.key(key);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(error, _)| error)
}
