//! The runtime's metric families (consumer, dead letters, outbox, producer, retention,
//! reconciliation), declared once as [`RuntimeMetrics`] and registered after the kit's when a
//! [`crate::Runtime`] connects, in the order `/metrics` shows them. Every unlabelled one is at
//! zero from the start; the consumer resolves its labelled series when it starts.

use std::sync::Arc;

use kit::Metrics;
use kit::metrics::{Counters, Gauges, Histograms, Level, histogram, histograms};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

/// The series of one consumer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub consumer: &'static str,
}

/// The series of one consumer, for one reason (a dead letter's kind, a rejoin's stall).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerReasonLabels {
    pub consumer: &'static str,
    pub reason: &'static str,
}

/// The series of one event type on one topic.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub topic: String,
    pub event_type: &'static str,
}

/// The series of one topic.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

/// The series of one partition a consumer holds.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub consumer: &'static str,
    pub topic: String,
    pub partition: i32,
}

/// The series of one reason, alone (a producer's replacement).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The series of one table (retention).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: &'static str,
}

/// The series of one kind of repair (reconciliation).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// The series of one kind of request one of a service's Kafka clients sends.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KafkaRequestLabels {
    pub client: KafkaClient,
    pub request: KafkaRequest,
}

/// Which of a service's Kafka clients.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum KafkaClient {
    Producer,
    Consumer,
}

impl EncodeLabelValue for KafkaClient {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let name = match self {
            KafkaClient::Producer => "producer",
            KafkaClient::Consumer => "consumer",
        };
        EncodeLabelValue::encode(&name, encoder)
    }
}

/// A kind of Kafka request, as librdkafka's statistics name them: the two an order costs the
/// broker most, and all the others together (metadata, heartbeats, offset commits, ...).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum KafkaRequest {
    Produce,
    Fetch,
    Other,
}

impl KafkaRequest {
    /// Every kind, in the order of their discriminants, which index per-kind arrays.
    pub const ALL: [KafkaRequest; 3] = [
        KafkaRequest::Produce,
        KafkaRequest::Fetch,
        KafkaRequest::Other,
    ];

    /// The kind of the request librdkafka's statistics name `name`.
    pub fn of(name: &str) -> Self {
        match name {
            "Produce" => KafkaRequest::Produce,
            "Fetch" => KafkaRequest::Fetch,
            _ => KafkaRequest::Other,
        }
    }
}

/// Every family the runtime fills. Shared by its workers behind an `Arc`.
#[derive(Debug)]
pub struct RuntimeMetrics {
    /// `events_handled_total`.
    pub handled: Counters<EventLabels>,
    /// `events_duplicate_total`.
    pub duplicate: Counters<EventLabels>,
    /// `events_ignored_total`.
    pub ignored: Counters<TopicLabels>,
    /// `events_retried_total`.
    pub retried: Counters<EventLabels>,
    /// `event_handle_duration_seconds`.
    pub handle_duration: Histograms<EventLabels>,
    /// `events_dead_lettered_total`.
    pub dead_lettered: Counters<ConsumerReasonLabels>,
    /// `dead_letters_parked_total`.
    pub dead_letters_parked_total: Counters<ConsumerLabels>,
    /// `dead_letters_parked`.
    pub dead_letters_parked: Level,
    /// `consumer_batches_total`.
    pub batches: Counters<ConsumerLabels>,
    /// `consumer_partitions`.
    pub partitions: Gauges<ConsumerLabels>,
    /// `consumer_lag`.
    pub lag: Gauges<PartitionLabels>,
    /// `consumer_rejoins_total`.
    pub rejoins: Counters<ConsumerReasonLabels>,
    /// `consumer_spare`.
    pub spare: Gauges<ConsumerLabels>,
    /// `consumer_messages_dropped_total`.
    pub dropped: Counters<ConsumerLabels>,
    /// `consumer_partitions_paused_total`.
    pub paused: Counters<ConsumerLabels>,
    /// `outbox_backlog`.
    pub outbox_backlog: Level,
    /// `outbox_oldest_unsent_age_seconds`.
    pub outbox_oldest_unsent_age: Level,
    /// `outbox_parked`.
    pub outbox_parked: Level,
    /// `outbox_parked_total`.
    pub outbox_parked_total: Counter,
    /// `outbox_published_total`.
    pub outbox_published: Counter,
    /// `outbox_publish_delay_seconds`.
    pub outbox_publish_delay: Histogram,
    /// `outbox_relay_failures_total`.
    pub relay_failures: Counter,
    /// `producer_replacements_total`.
    pub producer_replacements: Counters<ReasonLabels>,
    /// `retention_deleted_total`.
    pub retention_deleted: Counters<TableLabels>,
    /// `reconciliation_repairs_total`.
    pub repairs: Counters<KindLabels>,
    /// `kafka_requests_total`.
    pub kafka_requests: Counters<KafkaRequestLabels>,
}

impl RuntimeMetrics {
    /// Registers the runtime's families in `metrics`, after the kit's.
    pub fn register(metrics: &Metrics) -> Arc<Self> {
        let m = metrics;
        Arc::new(RuntimeMetrics {
            handled: m.register(
                "events_handled",
                "Events applied by the consumer, by topic and event type",
                Counters::default(),
            ),
            duplicate: m.register(
                "events_duplicate",
                "Events delivered again and recognised as already applied, by topic and event type",
                Counters::default(),
            ),
            ignored: m.register(
                "events_ignored",
                "Events of a type this service does not handle, skipped, by topic",
                Counters::default(),
            ),
            retried: m.register(
                "events_retried",
                "Attempts at an event that failed for a reason that may pass and were tried again",
                Counters::default(),
            ),
            handle_duration: m.register(
                "event_handle_duration_seconds",
                "Time to apply an event and commit it (a batch's time shared among its events), by topic and event type",
                histograms(),
            ),
            dead_lettered: m.register(
                "events_dead_lettered",
                "Messages that can never be processed, sent to the dead-letter topic, by reason",
                Counters::default(),
            ),
            dead_letters_parked_total: m.register(
                "dead_letters_parked",
                "Dead letters the broker refused even trimmed, kept in the database instead",
                Counters::default(),
            ),
            dead_letters_parked: m.register(
                "dead_letters_parked",
                "Dead letters kept in the database now, waiting for the broker to take them",
                Level::default(),
            ),
            batches: m.register(
                "consumer_batches",
                "Batches of events applied in one transaction",
                Counters::default(),
            ),
            partitions: m.register(
                "consumer_partitions",
                "Partitions the consumer holds now",
                Gauges::default(),
            ),
            lag: m.register(
                "consumer_lag",
                "Messages on a partition not yet handled by this consumer, by topic and partition",
                Gauges::default(),
            ),
            rejoins: m.register(
                "consumer_rejoins",
                "Times the watchdog made the consumer rejoin its group with a new client, by reason",
                Counters::default(),
            ),
            spare: m.register(
                "consumer_spare",
                "1 while the consumer holds nothing because other members of its group hold every partition",
                Gauges::default(),
            ),
            dropped: m.register(
                "consumer_messages_dropped",
                "Messages taken and left unhandled because their partition was revoked meanwhile (its new owner reads them)",
                Counters::default(),
            ),
            paused: m.register(
                "consumer_partitions_paused",
                "Times a partition was paused because its worker's queue was full",
                Counters::default(),
            ),
            outbox_backlog: m.register(
                "outbox_backlog",
                "Outbox rows committed and not yet acknowledged by the broker",
                Level::default(),
            ),
            outbox_oldest_unsent_age: m.register(
                "outbox_oldest_unsent_age_seconds",
                "Age of the oldest outbox row not yet acknowledged by the broker, 0 when none waits",
                Level::default(),
            ),
            outbox_parked: m.register(
                "outbox_parked",
                "Outbox rows the broker refused for good, kept aside for an operator",
                Level::default(),
            ),
            outbox_parked_total: m.register(
                "outbox_parked",
                "Outbox rows the broker refused for good",
                Counter::default(),
            ),
            outbox_published: m.register(
                "outbox_published",
                "Outbox rows published and acknowledged by the broker",
                Counter::default(),
            ),
            outbox_publish_delay: m.register(
                "outbox_publish_delay_seconds",
                "Time from an outbox row's commit to the broker's acknowledgement",
                histogram(),
            ),
            relay_failures: m.register(
                "outbox_relay_failures",
                "Relay rounds that failed and were tried again",
                Counter::default(),
            ),
            producer_replacements: m.register(
                "producer_replacements",
                "Times the Kafka producer was replaced by a new one, by reason",
                Counters::default(),
            ),
            retention_deleted: m.register(
                "retention_deleted",
                "Rows deleted past their retention, by table",
                Counters::default(),
            ),
            repairs: m.register(
                "reconciliation_repairs",
                "Rows the reconciliation sweep found out of step and repaired, by kind",
                Counters::default(),
            ),
            kafka_requests: {
                let requests: Counters<KafkaRequestLabels> = m.register(
                    "kafka_requests",
                    "Requests the service's Kafka clients sent to the brokers, by client and kind, as librdkafka's statistics count them every 5 s",
                    Counters::default(),
                );
                for client in [KafkaClient::Producer, KafkaClient::Consumer] {
                    for request in KafkaRequest::ALL {
                        drop(requests.get_or_create(&KafkaRequestLabels { client, request }));
                    }
                }
                requests
            },
        })
    }

    /// The series of the repairs of `kind`, at zero until the first.
    pub fn repairs_of(&self, kind: &'static str) -> Counter {
        self.repairs.get_or_create_owned(&KindLabels { kind })
    }
}

/// A service's registry: the kit's families, then the runtime's.
pub fn registry() -> (Metrics, Arc<RuntimeMetrics>) {
    let metrics = Metrics::new();
    let runtime = RuntimeMetrics::register(&metrics);
    (metrics, runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_help_and_type_and_unlabelled_ones_start_at_zero() {
        let (metrics, runtime) = registry();
        let labels = EventLabels {
            topic: "order.events".into(),
            event_type: "OrderCreated",
        };
        runtime.handled.get_or_create(&labels).inc();
        runtime.handled.get_or_create(&labels).inc();
        runtime.outbox_backlog.set(3.0);
        runtime
            .handle_duration
            .get_or_create(&labels)
            .observe(0.004);
        let text = metrics.render();
        assert!(
            text.contains("# HELP events_handled Events applied"),
            "{text}"
        );
        assert!(text.contains("# TYPE events_handled counter"), "{text}");
        assert!(
            text.contains(
                "events_handled_total{topic=\"order.events\",event_type=\"OrderCreated\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE outbox_backlog gauge\noutbox_backlog 3.0"),
            "{text}"
        );
        assert!(text.contains("outbox_relay_failures_total 0"), "{text}");
        assert!(
            text.contains("event_handle_duration_seconds_bucket{le=\"0.005\",topic=\"order.events\",event_type=\"OrderCreated\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        let read = [("topic", "order.events"), ("event_type", "OrderCreated")];
        assert_eq!(metrics.sample("events_handled_total", &read), 2.0);
        assert_eq!(
            metrics.sample("event_handle_duration_seconds_count", &read),
            1.0
        );
    }
}
