//! The end of each saga, as `order.events` shows it: the terminal event of every order.
//!
//! The watcher reads every partition of `order.events` from its end at the time it starts,
//! so it sees only the benchmark's orders. A saga ends when the order service publishes
//! `OrderConfirmed` or `OrderCancelled`; the time taken is the message's timestamp (set when
//! the order service's relay hands the event to the broker) minus the order's scheduled send
//! time, both read from this machine's clock. The consumer's own fetch wait therefore does
//! not count, and neither does its rest: it reads in bursts, a quarter of a second apart, so
//! that the broker's figures count little of the benchmark's own reading.

use eventing::kafka::KafkaSettings;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use contract::topics;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
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
    // Its partitions are assigned below, at the offsets it reads itself.
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
    let mut positions = Vec::with_capacity(partitions);
    for partition in 0..partitions {
        let partition = i32::try_from(partition)?;
        let (_, high) = consumer
            .fetch_watermarks(topics::ORDER_EVENTS, partition, Duration::from_secs(10))
            .context("reading order.events' end")?;
        positions.push((partition, high));
    }
    consumer.assign(&assignment(&positions)?)?;
    let ends = Ends::default();
    let filled = ends.clone();
    tokio::spawn(async move {
        let mut reader = Reader {
            positions,
            ends: filled,
        };
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => break,
                next = consumer.recv() => next,
            };
            let Ok(first) = first else { continue };
            reader.read(&first);
            // What the last fetch brought is in hand: take it, then rest.
            let drained = tokio::time::Instant::now() + DRAIN_AT_MOST;
            while tokio::time::Instant::now() < drained {
                match tokio::time::timeout(DRAIN_WAIT, consumer.recv()).await {
                    Ok(Ok(message)) => reader.read(&message),
                    _ => break,
                }
            }
            match rest(&consumer, &reader.positions, &stop).await {
                Ok(true) => {}
                Ok(false) => break,
                // Said, not swallowed: every saga after this would count as unfinished.
                Err(error) => {
                    eprintln!("the benchmark stopped reading order.events: {error:#}");
                    break;
                }
            }
        }
    });
    Ok(ends)
}

/// How long the watcher stops fetching after each read. Followed without a rest, every
/// terminal event would be a fetch of its own, answered by the broker as soon as it lands
/// (about two per order, which the broker's CPU per order would count as the system's);
/// with it, one fetch brings everything since the last. The latency is the message's
/// timestamp, so reading a quarter of a second later changes no figure.
const REST: Duration = Duration::from_millis(250);
/// How long the watcher waits for the next message of a burst before resting.
const DRAIN_WAIT: Duration = Duration::from_millis(2);
/// The longest burst: under a load that never pauses, the reader still rests.
const DRAIN_AT_MOST: Duration = Duration::from_millis(50);

/// The reader's state: where it is in each partition, and the ends it has seen.
struct Reader {
    /// The next offset to read, by partition.
    positions: Vec<(i32, i64)>,
    ends: Ends,
}

impl Reader {
    /// Records a message's terminal event, if it is one, and moves past it.
    fn read(&mut self, message: &BorrowedMessage<'_>) {
        if let Some(position) = self
            .positions
            .iter_mut()
            .find(|(partition, _)| *partition == message.partition())
        {
            position.1 = position.1.max(message.offset() + 1);
        }
        let event_type = message
            .headers()
            .and_then(|headers| headers.iter().find(|h| h.key == "event_type"))
            .and_then(|header| header.value);
        let confirmed = match event_type {
            Some(b"OrderConfirmed") => true,
            Some(b"OrderCancelled") => false,
            _ => return,
        };
        let (Some(key), Some(at_ms)) = (message.key(), message.timestamp().to_millis()) else {
            return;
        };
        self.ends.insert(
            String::from_utf8_lossy(key).into_owned(),
            End { confirmed, at_ms },
        );
    }
}

/// Stops fetching for [`REST`], then goes on from `positions`. The partitions are given up
/// and taken again at the offsets read so far, rather than paused: a paused partition that
/// had brought nothing yet would resume at the topic's end (`auto.offset.reset`), skipping
/// what landed meanwhile. `false` when `stop` came first; fails when the partitions cannot be
/// given up or taken again.
async fn rest(
    consumer: &StreamConsumer,
    positions: &[(i32, i64)],
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    consumer
        .unassign()
        .context("giving order.events' partitions up")?;
    tokio::select! {
        () = stop.cancelled() => return Ok(false),
        () = tokio::time::sleep(REST) => {}
    }
    consumer
        .assign(&assignment(positions)?)
        .context("taking order.events' partitions again")?;
    Ok(true)
}

/// `order.events`' partitions, each at its offset.
fn assignment(positions: &[(i32, i64)]) -> anyhow::Result<TopicPartitionList> {
    let mut assignment = TopicPartitionList::new();
    for &(partition, offset) in positions {
        assignment.add_partition_offset(topics::ORDER_EVENTS, partition, Offset::Offset(offset))?;
    }
    Ok(assignment)
}
