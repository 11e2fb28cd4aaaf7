//! The context every client of a service runs with ([`ClientState`]): librdkafka's logs and
//! errors go to `tracing`, folded when they repeat; a consumer's revoked partitions are
//! remembered ([`Revocations`]); and, for a service's own clients, the requests they send are
//! counted from librdkafka's statistics (`kafka_requests_total`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kit::metrics::Counters;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::metrics::{KafkaClient, KafkaRequest, KafkaRequestLabels};

/// The context of every client of a service: what librdkafka reports goes to `tracing`, with
/// repeats of one complaint folded into one line per interval.
pub struct ClientState {
    name: String,
    interval: Duration,
    /// Per complaint: when it was last logged and how many were held back since.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
    revocations: Revocations,
    requests: Option<RequestCount>,
}

/// How often a service's clients report their statistics, from which their requests are
/// counted. Each report is a JSON document of a few kilobytes to parse.
pub(super) const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// One client's requests, counted from librdkafka's statistics.
struct RequestCount {
    counts: Counters<KafkaRequestLabels>,
    client: KafkaClient,
    /// The totals of the last report, by kind ([`KafkaRequest::ALL`]'s order): the
    /// statistics give totals since the client started, the counter grows by the difference.
    seen: Mutex<[i64; KafkaRequest::ALL.len()]>,
}

impl RequestCount {
    fn record(&self, statistics: &rdkafka::statistics::Statistics) {
        let mut totals = [0i64; KafkaRequest::ALL.len()];
        for broker in statistics.brokers.values() {
            for (name, count) in &broker.req {
                totals[KafkaRequest::of(name) as usize] += count;
            }
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, request) in KafkaRequest::ALL.into_iter().enumerate() {
            let grown = totals[slot] - seen[slot];
            if grown > 0 {
                let labels = KafkaRequestLabels {
                    client: self.client,
                    request,
                };
                self.counts.get_or_create(&labels).inc_by(grown as u64);
            }
        }
        *seen = totals;
    }
}

/// How often each partition has been taken from a consumer (revoked in a rebalance), so that
/// a message taken before the partition was revoked can be told from one taken since: the
/// consumer hands its workers no message of a generation that has passed, since the
/// partition's new owner reads those messages too. Keyed by topic, then partition, so that
/// the lookup made for every message taken allocates nothing.
#[derive(Debug, Default)]
pub struct Revocations(Mutex<HashMap<String, HashMap<i32, u64>>>);

impl Revocations {
    /// The partition's generation now: how often it has been revoked from this client.
    pub fn generation(&self, topic: &str, partition: i32) -> u64 {
        let generations = self.0.lock().unwrap_or_else(|e| e.into_inner());
        generations
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
            .copied()
            .unwrap_or(0)
    }

    fn revoke(&self, partitions: &TopicPartitionList) {
        let mut generations = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for element in partitions.elements() {
            *generations
                .entry(element.topic().to_owned())
                .or_default()
                .entry(element.partition())
                .or_default() += 1;
        }
    }
}

impl ClientState {
    pub(super) fn new(name: &str, interval: Duration) -> Self {
        ClientState {
            name: name.to_owned(),
            interval,
            seen: Mutex::default(),
            revocations: Revocations::default(),
            requests: None,
        }
    }

    /// This client's requests counted in `counts`, under `client`, from its statistics.
    pub(super) fn counting(
        mut self,
        counts: Counters<KafkaRequestLabels>,
        client: KafkaClient,
    ) -> Self {
        self.requests = Some(RequestCount {
            counts,
            client,
            seen: Mutex::default(),
        });
        self
    }

    /// The partitions this client has had revoked, and how often.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// `Some(held back)` when `what` may be logged now, `None` while it is held back.
    fn may_log(&self, what: &str) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match seen.get_mut(what) {
            Some((last, held)) if now.duration_since(*last) < self.interval => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let before = *held;
                *last = now;
                *held = 0;
                Some(before)
            }
            None => {
                seen.insert(what.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

impl ClientContext for ClientState {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // Log lines repeat with changing details (addresses, durations): fold them by
        // facility and level.
        let Some(held) = self.may_log(&format!("log {fac} {level:?}")) else {
            return;
        };
        let client = self.name.as_str();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(client, fac, repeats = held, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(client, fac, repeats = held, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(client, fac, repeats = held, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(client, fac, repeats = held, "librdkafka: {message}")
            }
        }
    }

    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        if let Some(requests) = &self.requests {
            requests.record(&statistics);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(client = %self.name, %error, reason, "the Kafka client hit a fatal error");
            return;
        }
        let Some(held) = self.may_log(&format!("error {error}")) else {
            return;
        };
        tracing::warn!(
            client = %self.name,
            %error,
            reason,
            repeats = held,
            "Kafka client error (repeats: how many like it were not logged since the last)"
        );
    }
}

impl ConsumerContext for ClientState {
    /// Before partitions go to another member: from now on, the messages of theirs that were
    /// taken and wait for a worker are of a past generation, and are dropped unhandled.
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(partitions) = rebalance {
            tracing::debug!(client = %self.name, partitions = partitions.count(), "partitions revoked");
            self.revocations.revoke(partitions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_complaint_is_logged_once_per_interval_with_the_count_held_back() {
        let state = ClientState::new("test", Duration::from_millis(50));
        assert_eq!(state.may_log("AllBrokersDown"), Some(0));
        assert_eq!(state.may_log("AllBrokersDown"), None);
        assert_eq!(state.may_log("AllBrokersDown"), None);
        assert_eq!(
            state.may_log("another"),
            Some(0),
            "each complaint on its own"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(state.may_log("AllBrokersDown"), Some(2));
        assert_eq!(state.may_log("AllBrokersDown"), None);
    }

    #[test]
    fn requests_are_counted_by_how_much_the_statistics_grew_since_the_last_report() {
        let (metrics, runtime) = crate::metrics::registry();
        let state = ClientState::new("test", Duration::from_secs(1))
            .counting(runtime.kafka_requests.clone(), KafkaClient::Producer);
        let report = |produce: i64, metadata: i64| {
            serde_json::from_value::<rdkafka::statistics::Statistics>(serde_json::json!({
                "name": "test", "client_id": "test", "type": "producer", "ts": 0, "time": 0,
                "age": 0, "replyq": 0, "msg_cnt": 0, "msg_size": 0, "msg_max": 0,
                "msg_size_max": 0, "simple_cnt": 0, "metadata_cache_cnt": 0, "tx": 0,
                "tx_bytes": 0, "rx": 0, "rx_bytes": 0, "txmsgs": 0, "txmsg_bytes": 0,
                "rxmsgs": 0, "rxmsg_bytes": 0,
                "brokers": { "b:9092/1": broker(produce, metadata) },
                "topics": {}
            }))
            .expect("statistics")
        };
        state.stats(report(3, 2));
        state.stats(report(5, 2));
        let sample = |request: &str| {
            metrics.sample(
                "kafka_requests_total",
                &[("client", "producer"), ("request", request)],
            )
        };
        assert_eq!(sample("Produce"), 5.0);
        assert_eq!(sample("Other"), 2.0);
        assert_eq!(sample("Fetch"), 0.0);
    }

    /// One broker's statistics, with the request counts given and every other figure zero.
    fn broker(produce: i64, metadata: i64) -> serde_json::Value {
        serde_json::json!({
            "name": "b:9092/1", "nodeid": 1, "nodename": "b:9092", "source": "learned",
            "state": "UP", "stateage": 0, "outbuf_cnt": 0, "outbuf_msg_cnt": 0,
            "waitresp_cnt": 0, "waitresp_msg_cnt": 0, "tx": 0, "txbytes": 0, "txerrs": 0,
            "txretries": 0, "txidle": 0, "req_timeouts": 0, "rx": 0, "rxbytes": 0,
            "rxerrs": 0, "rxcorriderrs": 0, "rxpartial": 0, "rxidle": 0, "zbuf_grow": 0,
            "buf_grow": 0, "wakeups": 0, "connects": 0, "disconnects": 0,
            "req": { "Produce": produce, "Metadata": metadata },
            "toppars": {}
        })
    }
}
