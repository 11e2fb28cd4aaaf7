//! The series one consumer fills, resolved once when its runner is built: each then exists at
//! zero from the start, and counting an event is a field access, with no label to build or
//! family to look up.

use std::collections::HashMap;
use std::sync::Arc;

use kit::metrics::Level;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::watchdog::Stall;
use crate::metrics::{
    ConsumerLabels, ConsumerReasonLabels, EventLabels, PartitionLabels, RuntimeMetrics, TopicLabels,
};

/// What one event type on one topic counts.
pub(super) struct EventSeries {
    pub handled: Counter,
    pub duplicate: Counter,
    pub retried: Counter,
    pub duration: Histogram,
}

/// The series of one consumer.
pub(super) struct Series {
    consumer: &'static str,
    runtime: Arc<RuntimeMetrics>,
    pub batches: Counter,
    pub dead_letters_parked: Counter,
    pub dropped: Counter,
    pub paused: Counter,
    pub partitions: Level,
    pub spare: Level,
    /// By dead-letter kind.
    dead_lettered: HashMap<&'static str, Counter>,
    /// By stall.
    rejoins: HashMap<&'static str, Counter>,
    /// By topic.
    ignored: HashMap<String, Counter>,
    /// By topic, then event type.
    events: HashMap<String, HashMap<&'static str, EventSeries>>,
}

impl Series {
    /// The series of `consumer` of `topics`, every dead-letter kind in `dead_letter_kinds`,
    /// every stall and every event type the contract puts on those topics at zero.
    pub fn resolve(
        runtime: Arc<RuntimeMetrics>,
        consumer: &'static str,
        topics: &[String],
        dead_letter_kinds: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        let of = ConsumerLabels { consumer };
        let with_reason = |reason| ConsumerReasonLabels { consumer, reason };
        let dead_lettered = dead_letter_kinds
            .into_iter()
            .map(|kind| {
                (
                    kind,
                    runtime
                        .dead_lettered
                        .get_or_create_owned(&with_reason(kind)),
                )
            })
            .collect();
        let rejoins = Stall::ALL
            .iter()
            .map(|stall| {
                let reason = stall.label();
                (
                    reason,
                    runtime.rejoins.get_or_create_owned(&with_reason(reason)),
                )
            })
            .collect();
        let ignored = topics
            .iter()
            .map(|topic| {
                let labels = TopicLabels {
                    topic: topic.clone(),
                };
                (topic.clone(), runtime.ignored.get_or_create_owned(&labels))
            })
            .collect();
        let events = topics
            .iter()
            .map(|topic| {
                let types = contract::Event::TYPES.iter().copied();
                let of_topic = types
                    .filter(|t| contract::Event::topic_of(t) == Some(topic.as_str()))
                    .map(|event_type| (event_type, event_series(&runtime, topic, event_type)))
                    .collect();
                (topic.clone(), of_topic)
            })
            .collect();
        Series {
            consumer,
            batches: runtime.batches.get_or_create_owned(&of),
            dead_letters_parked: runtime.dead_letters_parked_total.get_or_create_owned(&of),
            dropped: runtime.dropped.get_or_create_owned(&of),
            paused: runtime.paused.get_or_create_owned(&of),
            partitions: runtime.partitions.get_or_create_owned(&of),
            spare: runtime.spare.get_or_create_owned(&of),
            dead_lettered,
            rejoins,
            ignored,
            events,
            runtime,
        }
    }

    /// Counts one dead letter of `kind`.
    pub fn dead_lettered(&self, kind: &'static str) {
        match self.dead_lettered.get(kind) {
            Some(counter) => counter.inc(),
            None => self.with_reason(&self.runtime.dead_lettered, kind),
        };
    }

    /// Counts one rejoin after `stall`.
    pub fn rejoined(&self, stall: Stall) {
        match self.rejoins.get(stall.label()) {
            Some(counter) => counter.inc(),
            None => self.with_reason(&self.runtime.rejoins, stall.label()),
        };
    }

    /// Counts one event of a type this service does not handle, on `topic`.
    pub fn ignored(&self, topic: &str) {
        match self.ignored.get(topic) {
            Some(counter) => counter.inc(),
            None => {
                let labels = TopicLabels {
                    topic: topic.to_owned(),
                };
                self.runtime.ignored.get_or_create(&labels).inc()
            }
        };
    }

    /// Runs `count` on the series of `event_type` on `topic`.
    pub fn event(&self, topic: &str, event_type: &'static str, count: impl FnOnce(&EventSeries)) {
        match self
            .events
            .get(topic)
            .and_then(|types| types.get(event_type))
        {
            Some(series) => count(series),
            // An event type the contract does not put on this topic is dead-lettered before
            // it is counted, so this is only for a topic subscribed beyond the contract.
            None => count(&event_series(&self.runtime, topic, event_type)),
        }
    }

    /// Sets the lag of one partition.
    pub fn lag(&self, topic: &str, partition: i32, lag: i64) {
        let labels = PartitionLabels {
            consumer: self.consumer,
            topic: topic.to_owned(),
            partition,
        };
        self.runtime.lag.get_or_create(&labels).set(lag as f64);
    }

    fn with_reason(
        &self,
        family: &kit::metrics::Counters<ConsumerReasonLabels>,
        reason: &'static str,
    ) -> u64 {
        let labels = ConsumerReasonLabels {
            consumer: self.consumer,
            reason,
        };
        family.get_or_create(&labels).inc()
    }
}

fn event_series(runtime: &RuntimeMetrics, topic: &str, event_type: &'static str) -> EventSeries {
    let labels = EventLabels {
        topic: topic.to_owned(),
        event_type,
    };
    EventSeries {
        handled: runtime.handled.get_or_create_owned(&labels),
        duplicate: runtime.duplicate.get_or_create_owned(&labels),
        retried: runtime.retried.get_or_create_owned(&labels),
        duration: runtime.handle_duration.get_or_create_owned(&labels),
    }
}
