//! Following a topic (`shopctl tail`), and what every topic reader here shares.

use std::time::Duration;

use anyhow::Context;
use eventing::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message};

/// A consumer in a group of its own that commits nothing, so it never disturbs the services.
pub(crate) fn reader(kafka: &KafkaSettings, from_beginning: bool) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("group.id", format!("shopctl-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if from_beginning { "earliest" } else { "latest" },
        )
        // Answered as soon as a message lands, on either broker.
        .set(
            "fetch.wait.max.ms",
            kafka.fetch_wait_max.as_millis().to_string(),
        );
    config
}

/// Fails clearly when no broker answers, instead of waiting forever.
pub fn check_broker(kafka: &KafkaSettings) -> anyhow::Result<()> {
    let brokers = &kafka.brokers;
    let consumer: BaseConsumer = reader(kafka, true).create()?;
    consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .map(|_| ())
        .with_context(|| {
            format!("no Kafka broker answers at {brokers}; is the system up? (shopctl up)")
        })
}

/// The headers of a message as `(name, value)` pairs.
pub fn headers(message: &impl Message) -> Vec<(String, String)> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Prints each message of `topic` as `key value`, optionally preceded by a `#` line with its
/// partition, offset and headers.
pub async fn tail(
    kafka: &KafkaSettings,
    topic: &str,
    from_beginning: bool,
    show_headers: bool,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let owned = kafka.clone();
    tokio::task::spawn_blocking(move || check_broker(&owned)).await??;
    let brokers = &kafka.brokers;
    let consumer: StreamConsumer = reader(kafka, from_beginning)
        .create()
        .context("creating a consumer")?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    let mut printed = 0;
    while limit.is_none_or(|limit| printed < limit) {
        let message = consumer
            .recv()
            .await
            .with_context(|| format!("reading {topic} from {brokers}"))?;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default());
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
        if show_headers {
            let headers: Vec<String> = headers(&message)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "# partition={} offset={} {}",
                message.partition(),
                message.offset(),
                headers.join(" ")
            );
        }
        println!("{key} {value}");
        printed += 1;
    }
    Ok(())
}
