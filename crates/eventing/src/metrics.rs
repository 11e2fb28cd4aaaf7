//! The runtime's metric families: described once, when a [`crate::Runtime`] connects, with
//! every unlabelled one at zero from the start.

use kit::Metrics;
use kit::metrics::Kind;

/// The families the runtime fills (consumer, outbox, producer, dead letters, retention,
/// reconciliation), in the order `/metrics` shows them.
const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "events_handled_total",
        Kind::Counter,
        "Events applied by the consumer, by topic and event type",
    ),
    (
        "events_duplicate_total",
        Kind::Counter,
        "Events delivered again and recognised as already applied, by topic and event type",
    ),
    (
        "events_ignored_total",
        Kind::Counter,
        "Events of a type this service does not handle, skipped, by topic",
    ),
    (
        "events_retried_total",
        Kind::Counter,
        "Attempts at an event that failed for a reason that may pass and were tried again",
    ),
    (
        "event_handle_duration_seconds",
        Kind::Histogram,
        "Time to apply an event and commit it (a batch's time shared among its events), by topic and event type",
    ),
    (
        "events_dead_lettered_total",
        Kind::Counter,
        "Messages that can never be processed, sent to the dead-letter topic, by reason",
    ),
    (
        "dead_letters_parked_total",
        Kind::Counter,
        "Dead letters the broker refused even trimmed, kept in the database instead",
    ),
    (
        "dead_letters_parked",
        Kind::Gauge,
        "Dead letters kept in the database now, waiting for the broker to take them",
    ),
    (
        "consumer_batches_total",
        Kind::Counter,
        "Batches of events applied in one transaction",
    ),
    (
        "consumer_partitions",
        Kind::Gauge,
        "Partitions the consumer holds now",
    ),
    (
        "consumer_lag",
        Kind::Gauge,
        "Messages on a partition not yet handled by this consumer, by topic and partition",
    ),
    (
        "consumer_rejoins_total",
        Kind::Counter,
        "Times the watchdog made the consumer rejoin its group with a new client, by reason",
    ),
    (
        "consumer_spare",
        Kind::Gauge,
        "1 while the consumer holds nothing because other members of its group hold every partition",
    ),
    (
        "consumer_messages_dropped_total",
        Kind::Counter,
        "Messages taken and left unhandled because their partition was revoked meanwhile (its new owner reads them)",
    ),
    (
        "consumer_partitions_paused_total",
        Kind::Counter,
        "Times a partition was paused because its worker's queue was full",
    ),
    (
        "outbox_backlog",
        Kind::Gauge,
        "Outbox rows committed and not yet acknowledged by the broker",
    ),
    (
        "outbox_oldest_unsent_age_seconds",
        Kind::Gauge,
        "Age of the oldest outbox row not yet acknowledged by the broker, 0 when none waits",
    ),
    (
        "outbox_parked",
        Kind::Gauge,
        "Outbox rows the broker refused for good, kept aside for an operator",
    ),
    (
        "outbox_parked_total",
        Kind::Counter,
        "Outbox rows the broker refused for good",
    ),
    (
        "outbox_published_total",
        Kind::Counter,
        "Outbox rows published and acknowledged by the broker",
    ),
    (
        "outbox_publish_delay_seconds",
        Kind::Histogram,
        "Time from an outbox row's commit to the broker's acknowledgement",
    ),
    (
        "outbox_relay_failures_total",
        Kind::Counter,
        "Relay rounds that failed and were tried again",
    ),
    (
        "producer_replacements_total",
        Kind::Counter,
        "Times the Kafka producer was replaced by a new one, by reason",
    ),
    (
        "retention_deleted_total",
        Kind::Counter,
        "Rows deleted past their retention, by table",
    ),
    (
        "reconciliation_repairs_total",
        Kind::Counter,
        "Rows the reconciliation sweep found out of step and repaired, by kind",
    ),
];

/// A service's registry: the kit's families, then the runtime's.
pub fn registry() -> Metrics {
    let metrics = Metrics::new();
    describe(&metrics);
    metrics
}

/// Describes the runtime's families in `metrics`, after the kit's, every unlabelled one at
/// zero.
pub fn describe(metrics: &Metrics) {
    for (name, kind, help) in FAMILIES {
        metrics.describe(name, *kind, help);
    }
    for name in [
        "dead_letters_parked",
        "outbox_backlog",
        "outbox_oldest_unsent_age_seconds",
        "outbox_parked",
        "outbox_parked_total",
        "outbox_published_total",
        "outbox_relay_failures_total",
    ] {
        metrics.zero(name, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_help_and_type_and_unlabelled_ones_start_at_zero() {
        let metrics = registry();
        let labels = [("topic", "order.events"), ("event_type", "OrderCreated")];
        metrics.inc("events_handled_total", &labels);
        metrics.inc("events_handled_total", &labels);
        metrics.set("outbox_backlog", &[], 3.0);
        metrics.observe("event_handle_duration_seconds", &labels, 0.004);
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
        assert_eq!(metrics.get("events_handled_total", &labels), 2.0);
        assert_eq!(metrics.get("event_handle_duration_seconds", &labels), 1.0);
    }
}
