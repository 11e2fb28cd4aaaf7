//! How each service is doing, as the console shows it: its readiness (`/health/ready`), and
//! from its `/metrics` the consumer lag, the outbox backlog and the age of its oldest row, the
//! dead letters sent since it started, and the data-platform breaker. Also the dead letters
//! waiting in each dead-letter topic. A poller refreshes both in the background.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventing::kafka::KafkaSettings;
use tokio::sync::watch;

/// A service the console watches.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: &'static str,
    pub url: String,
    /// Whether it consumes, and so has a lag and a dead-letter topic.
    pub consumes: bool,
}

/// What one look at a service found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceStatus {
    pub name: &'static str,
    /// `None` while it cannot be reached.
    pub ready: Option<bool>,
    /// The reason `/health/ready` gives when it is not ready.
    pub reason: Option<String>,
    pub consumer_lag: Option<f64>,
    pub outbox_backlog: Option<f64>,
    pub outbox_oldest_age_s: Option<f64>,
    pub dead_lettered: Option<f64>,
    /// The forwarder's breaker: `Some(true)` while it holds deliveries back.
    pub breaker_open: Option<bool>,
}

/// One dead letter, as the console lists it: everything an operator needs to judge it before
/// replaying it. Every field is the letter's own text, written by whoever wrote the letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// Its offset in the dead-letter topic: what the replay button names.
    pub offset: i64,
    pub failed_at: String,
    pub event_type: String,
    pub event_id: String,
    pub key: String,
    /// `topic/partition@offset` it came from.
    pub source: String,
    pub error: String,
    pub payload: String,
    pub replayed_at: Option<String>,
    /// Why it may not be replayed, when it may not ([`ops::dlq::check_replay`]).
    pub refused: Option<String>,
}

/// The dead letters waiting in one service's dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    pub service: &'static str,
    /// `None` until the topic has been read, or while it cannot be.
    pub letters: Option<Vec<Letter>>,
}

/// The latest looks, shared with the pages.
#[derive(Clone)]
pub struct Status {
    services: Arc<Mutex<Vec<ServiceStatus>>>,
    dead_letters: Arc<Mutex<Vec<DeadLetters>>>,
    changed: watch::Sender<u64>,
}

impl Status {
    /// Starts looking at `watched` every `every`, and at their dead-letter topics every five
    /// looks (reading a topic to its end costs more than a scrape).
    pub fn start(watched: Vec<Watched>, kafka: KafkaSettings, every: Duration) -> Status {
        let status = Status {
            services: Arc::new(Mutex::new(
                watched
                    .iter()
                    .map(|w| ServiceStatus {
                        name: w.name,
                        ..Default::default()
                    })
                    .collect(),
            )),
            dead_letters: Arc::new(Mutex::new(
                watched
                    .iter()
                    .filter(|w| w.consumes)
                    .map(|w| DeadLetters {
                        service: w.name,
                        letters: None,
                    })
                    .collect(),
            )),
            changed: watch::Sender::new(0),
        };
        let poller = status.clone();
        tokio::spawn(async move { poller.poll(watched, kafka, every).await });
        status
    }

    async fn poll(self, watched: Vec<Watched>, kafka: KafkaSettings, every: Duration) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        let mut ticker = tokio::time::interval(every);
        for round in 0u64.. {
            ticker.tick().await;
            let looks = futures::future::join_all(watched.iter().map(|w| look(&http, w))).await;
            let changed = {
                let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
                let changed = *services != looks;
                *services = looks;
                changed
            };
            if changed {
                self.changed.send_modify(|n| *n += 1);
            }
            if round % 5 == 0 {
                self.refresh_dead_letters(&watched, &kafka).await;
            }
        }
    }

    /// Reads every dead-letter topic again now.
    pub async fn refresh_dead_letters(&self, watched: &[Watched], kafka: &KafkaSettings) {
        for w in watched.iter().filter(|w| w.consumes) {
            let (settings, name) = (kafka.clone(), w.name);
            let read = tokio::task::spawn_blocking(move || ops::dlq::list(&settings, name)).await;
            let letters = match read {
                Ok(Ok(letters)) => Some(
                    letters
                        .into_iter()
                        .map(|l| Letter {
                            offset: l.offset,
                            refused: (l.stage() != Some(eventing::dlq::Stage::Deliver))
                                .then(|| ops::dlq::check_replay(name, &l).err())
                                .flatten(),
                            source: format!(
                                "{}/{}@{}",
                                l.source_topic, l.source_partition, l.source_offset
                            ),
                            failed_at: l.failed_at,
                            event_type: l.event_type.unwrap_or_else(|| "-".into()),
                            event_id: l.event_id.unwrap_or_else(|| "-".into()),
                            key: l.key.unwrap_or_else(|| "-".into()),
                            error: l.error,
                            payload: l.payload.unwrap_or_default(),
                            replayed_at: l.replayed_at,
                        })
                        .collect(),
                ),
                Ok(Err(error)) => {
                    tracing::warn!(service = name, %error, "reading the dead letters");
                    None
                }
                Err(_) => None,
            };
            let mut all = self.dead_letters.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = all.iter_mut().find(|d| d.service == name)
                && entry.letters != letters
            {
                entry.letters = letters;
                self.changed.send_modify(|n| *n += 1);
            }
        }
    }

    pub fn services(&self) -> Vec<ServiceStatus> {
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetters> {
        self.dead_letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes whenever a look finds something new.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

async fn look(http: &reqwest::Client, watched: &Watched) -> ServiceStatus {
    let mut status = ServiceStatus {
        name: watched.name,
        ..Default::default()
    };
    let base = watched.url.trim_end_matches('/');
    if let Ok(response) = http.get(format!("{base}/health/ready")).send().await {
        let ready = response.status().is_success();
        status.ready = Some(ready);
        if !ready {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            // `{"failing": {"broker": "the broker does not answer: …"}}`
            let failing = body["failing"].as_object().map(|parts| {
                parts
                    .iter()
                    .map(|(part, why)| format!("{part}: {}", why.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            status.reason = Some(failing.unwrap_or_else(|| body.to_string()));
        }
    }
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(response) if response.status().is_success() => response.text().await.unwrap_or_default(),
        _ => return status,
    };
    status.outbox_backlog = sum(&text, "outbox_backlog");
    status.outbox_oldest_age_s = sum(&text, "outbox_oldest_unsent_age_seconds");
    if watched.consumes {
        status.consumer_lag = sum(&text, "consumer_lag");
        status.dead_lettered = sum(&text, "events_dead_lettered_total");
    }
    status.breaker_open = sum(&text, "data_platform_circuit_open").map(|v| v > 0.0);
    status
}

/// The sum of every sample of the family `name` in an OpenMetrics text, or `None` when the
/// text has no sample of it.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name{labels} value` or `name value`; not `name_other …`.
        let value = match rest.chars().next() {
            Some('{') => rest.rsplit_once('}').map(|(_, v)| v),
            Some(' ') => Some(rest),
            _ => None,
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_sums_its_samples_and_not_those_of_families_that_share_its_prefix() {
        let text = "# TYPE consumer_lag gauge\n\
                    consumer_lag{consumer=\"a\",topic=\"t\",partition=\"0\"} 3\n\
                    consumer_lag{consumer=\"a\",topic=\"t\",partition=\"1\"} 4\n\
                    consumer_lag_other 100\n\
                    outbox_backlog 0\n";
        assert_eq!(sum(text, "consumer_lag"), Some(7.0));
        assert_eq!(sum(text, "outbox_backlog"), Some(0.0));
        assert_eq!(sum(text, "data_platform_circuit_open"), None);
    }
}
