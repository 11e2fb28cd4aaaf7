//! Dead letters as an operator sees them: listing a service's dead-letter topic, and
//! replaying a letter to where it came from. Nothing a letter says is trusted: it goes back
//! only to a topic its service consumes, and only if the source offset it names holds the
//! same message ([`replay`]). Each replay is recorded on the dead-letter topic itself
//! ([`HEADER_REPLAYED`]), so that replaying all of them skips those done. Filing letters is
//! the consumer's, in [`eventing::dlq`].

use std::time::Duration;

use eventing::dlq::{
    HEADER_ERROR, HEADER_FAILED_AT, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC, HEADER_STAGE, Stage, is_dlq_header,
};
use eventing::kafka::{KafkaSettings, Producer, Record};
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};

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
/// was. Blocking, like [`crate::read::read_to_end`].
pub fn list(
    settings: &KafkaSettings,
    service: &str,
) -> Result<Vec<DeadLetter>, crate::read::ReadError> {
    let topic = contract::topics::dlq_topic(service);
    let messages = crate::read::read_to_end(settings, &[topic.as_str()], Duration::from_secs(60))?;
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
    Read(#[from] crate::read::ReadError),
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
pub async fn replay(
    settings: &KafkaSettings,
    producer: &Producer,
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
            crate::read::read_at(&reader, &source, partition, offset, Duration::from_secs(10))
        })
        .await
        .map_err(|_| crate::read::ReadError::Timeout(vec![topic.clone()]))??;
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
        let mut record = Record::to(&topic).partition(partition).headers(headers);
        record.key = message.key();
        record.payload = message.payload();
        producer.send(record, Duration::from_secs(10)).await?;
        mark_replayed(producer, service, letter).await?;
        outcomes.push(Replayed::Republished { topic, partition });
    }
    Ok(outcomes)
}

/// Records on `service`'s dead-letter topic that `letter` has been replayed, so that
/// replaying all of them skips it from now on.
pub async fn mark_replayed(
    producer: &Producer,
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
    let mut record = Record::to(&topic).headers(headers);
    record.key = letter.message.key();
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
}
