//! Kafka clients set up the one way every service uses them.
//!
//! - The producer is idempotent with `acks=all`: a retried send never duplicates or reorders
//!   messages within a partition, and a delivery report means every in-sync replica has it.
//! - Consumers commit automatically but store offsets by hand (`enable.auto.offset.store=false`):
//!   an offset is stored only after the transaction that handled its message committed, so
//!   the periodic commit never covers a message whose effect could still be lost.
//! - Topics are created explicitly with [`ensure_topics`]; nothing relies on a broker creating
//!   topics on first use.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

/// How to reach the broker and how consumers behave.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of brokers.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Consumer group id; defaults to the service's name.
    #[arg(long = "kafka-group-id", env = "KAFKA_GROUP_ID")]
    pub group_id: Option<String>,
    /// Longest a fetch waits for data (`fetch.wait.max.ms`). Tansu answers a fetch only when
    /// this runs out, so it is the consumer latency there: keep it small locally.
    #[arg(
        long = "kafka-fetch-wait-max-ms",
        env = "KAFKA_FETCH_WAIT_MAX_MS",
        default_value_t = 10
    )]
    pub fetch_wait_max_ms: u32,
    /// After this long without a heartbeat the group gives a member's partitions to others.
    #[arg(
        long = "kafka-session-timeout-ms",
        env = "KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub session_timeout_ms: u32,
    /// How often a consumer tells the group it is alive.
    #[arg(
        long = "kafka-heartbeat-interval-ms",
        env = "KAFKA_HEARTBEAT_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub heartbeat_interval_ms: u32,
    /// How often each consumer measures its lag (`consumer_lag` in `/metrics`).
    #[arg(
        long = "kafka-lag-interval-ms",
        env = "KAFKA_LAG_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub lag_interval_ms: u64,
}

impl KafkaSettings {
    /// Settings for a broker list with every other value at its default.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            group_id: None,
            fetch_wait_max_ms: 10,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            lag_interval_ms: 10_000,
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            // The broker address may be a name that resolves to several addresses in
            // containers; try them all.
            .set("client.dns.lookup", "use_all_dns_ips");
        config
    }

    /// An idempotent producer with `acks=all`.
    pub fn producer(&self, client_id: &str) -> Result<FutureProducer, KafkaError> {
        self.client_config()
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Send as soon as possible: the relay already batches what it has.
            .set("linger.ms", "1")
            // A message that cannot be delivered within this time fails and the relay tries
            // it again, rather than hanging on the broker forever.
            .set("message.timeout.ms", "30000")
            .create()
    }

    /// A consumer in `group` subscribed to `topics`, reading from the earliest offset when
    /// the group has none, with automatic commits of offsets stored by hand.
    pub fn consumer(&self, group: &str, topics: &[&str]) -> Result<StreamConsumer, KafkaError> {
        let group = self.group_id.as_deref().unwrap_or(group);
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", group)
            .set("client.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                self.heartbeat_interval_ms.to_string(),
            )
            .create()?;
        consumer.subscribe(topics)?;
        Ok(consumer)
    }

    /// An admin client, for creating topics.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
        self.client_config().create()
    }
}

/// Creates each `(name, partitions, compacted)` topic that does not exist yet. A topic that
/// already exists is left as it is.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[(String, i32, bool)],
) -> Result<(), KafkaError> {
    let admin = settings.admin()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, compacted)| {
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(1));
            if *compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::error!(%topic, ?code, "could not create topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// Every topic of the contract with its partition count, dead-letter topics included.
pub fn contract_topics() -> Vec<(String, i32, bool)> {
    contract::topics::TOPICS
        .iter()
        .map(|t| (t.name.to_owned(), t.partitions, t.compacted))
        .chain(
            contract::topics::dlq_topics()
                .into_iter()
                .map(|(name, partitions)| (name, partitions, false)),
        )
        .collect()
}

/// Why a topic could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no Kafka broker answers at {brokers}; is the system up? (shopctl up)")]
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

/// Reads every message already on `topics`, from the start of each partition to the end it
/// had when reading began, with a throwaway consumer group that commits nothing. Blocking:
/// call it from `spawn_blocking` in async code.
pub fn read_to_end(
    settings: &KafkaSettings,
    topics: &[&str],
    within: Duration,
) -> Result<Vec<OwnedMessage>, ReadError> {
    let consumer: BaseConsumer = settings
        .client_config()
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
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
