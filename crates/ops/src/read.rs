//! Reading topics as they are, with a throwaway consumer group that commits nothing: every
//! message to the end ([`read_to_end`]), or the one at an offset ([`read_at`]).

use std::time::{Duration, Instant};

use eventing::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

/// Why a topic could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no Kafka broker answers at {brokers}; is it running?")]
    NoBroker {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("reading the topics failed")]
    Kafka(#[from] KafkaError),
    #[error("could not read {0:?} to their end in time")]
    Timeout(Vec<String>),
}

/// A consumer of a throwaway group that commits nothing, for reading topics as they are.
fn reader(settings: &KafkaSettings) -> Result<BaseConsumer, KafkaError> {
    settings
        .client_config()
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
}

/// Reads every message already on `topics`, from the start of each partition to the end it
/// had when reading began, with a throwaway consumer group that commits nothing. Blocking:
/// call it from `spawn_blocking` in async code.
pub fn read_to_end(
    settings: &KafkaSettings,
    topics: &[&str],
    within: Duration,
) -> Result<Vec<OwnedMessage>, ReadError> {
    let consumer = reader(settings)?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|source| ReadError::NoBroker {
                brokers: settings.brokers.clone(),
                source,
            })?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) =
                consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(5))?;
            if high > low {
                assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
                ends.push((topic.to_string(), partition.id(), high));
            }
        }
    }
    let mut read = Vec::new();
    if ends.is_empty() {
        return Ok(read);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + within;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(ReadError::Timeout(
                topics.iter().map(|t| t.to_string()).collect(),
            ));
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?.detach();
        ends.retain(|(topic, partition, high)| {
            !(message.topic() == topic
                && message.partition() == *partition
                && message.offset() + 1 >= *high)
        });
        read.push(message);
    }
    Ok(read)
}

/// The message at `offset` of one partition, or `None` when the partition no longer (or does
/// not yet) hold that offset. Blocking, like [`read_to_end`].
pub fn read_at(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
    offset: i64,
    within: Duration,
) -> Result<Option<OwnedMessage>, ReadError> {
    let consumer = reader(settings)?;
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(5))
        .map_err(|source| ReadError::NoBroker {
            brokers: settings.brokers.clone(),
            source,
        })?;
    if !(low..high).contains(&offset) {
        return Ok(None);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?.detach();
        // A compacted topic may have dropped the offset since the watermarks were read: the
        // first message after it then comes instead.
        return Ok((message.offset() == offset).then_some(message));
    }
    Err(ReadError::Timeout(vec![format!(
        "{topic}/{partition}@{offset}"
    )]))
}
