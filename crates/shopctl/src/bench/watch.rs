//! The end of each saga, as `order.events` shows it: the terminal event of every order.
//!
//! The watcher reads every partition of `order.events` from its end at the time it starts,
//! so it sees only the benchmark's orders. A saga ends when the order service publishes
//! `OrderConfirmed` or `OrderCancelled`; the time taken is the message's timestamp (set when
//! the order service's relay hands the event to the broker) minus the order's scheduled send
//! time, both read from this machine's clock. The consumer's own fetch wait therefore does
//! not count.

use eventing::kafka::KafkaSettings;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use contract::topics;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// How one saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    pub confirmed: bool,
    /// When the terminal event was published, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// Terminal events by order id, filled while the watcher runs.
#[derive(Clone, Default)]
pub struct Ends(Arc<Mutex<HashMap<String, End>>>);

impl Ends {
    pub fn get(&self, order_id: &str) -> Option<End> {
        self.0.lock().expect("not poisoned").get(order_id).copied()
    }

    fn insert(&self, order_id: String, end: End) {
        self.0
            .lock()
            .expect("not poisoned")
            .entry(order_id)
            .or_insert(end);
    }
}

/// Starts reading `order.events` from its current end; returns the terminal events as they
/// arrive. Reading stops when `stop` is cancelled.
pub async fn watch(brokers: &str, stop: CancellationToken) -> anyhow::Result<Ends> {
    // Its offsets are assigned below. Its fetches are answered as soon as an event lands, so
    // the services' fetch wait costs the measurement nothing.
    let consumer: StreamConsumer = crate::kafka::reader(&KafkaSettings::new(brokers), false)
        .create()
        .context("creating the order.events reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topics::ORDER_EVENTS), Duration::from_secs(10))
        .with_context(|| format!("no Kafka broker answers at {brokers}"))?;
    let partitions = metadata
        .topics()
        .first()
        .map(|topic| topic.partitions().len())
        .filter(|n| *n > 0)
        .context("order.events has no partitions: is the system up?")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let partition = i32::try_from(partition)?;
        let (_, high) = consumer
            .fetch_watermarks(topics::ORDER_EVENTS, partition, Duration::from_secs(10))
            .context("reading order.events' end")?;
        assignment.add_partition_offset(topics::ORDER_EVENTS, partition, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    let ends = Ends::default();
    let filled = ends.clone();
    tokio::spawn(async move {
        let mut stream = consumer.stream();
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                next = stream.next() => match next {
                    Some(Ok(message)) => message,
                    Some(Err(_)) => continue,
                    None => break,
                },
            };
            let event_type = message
                .headers()
                .and_then(|headers| headers.iter().find(|h| h.key == "event_type"))
                .and_then(|header| header.value);
            let confirmed = match event_type {
                Some(b"OrderConfirmed") => true,
                Some(b"OrderCancelled") => false,
                _ => continue,
            };
            let (Some(key), Some(at_ms)) = (message.key(), message.timestamp().to_millis()) else {
                continue;
            };
            filled.insert(
                String::from_utf8_lossy(key).into_owned(),
                End { confirmed, at_ms },
            );
        }
    });
    Ok(ends)
}
