//! Creating topics: the contract's, as `shopctl up` and the tests need them.

use std::time::Duration;

use eventing::kafka::KafkaSettings;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

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
