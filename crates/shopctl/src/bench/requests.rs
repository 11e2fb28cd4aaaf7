//! Kafka requests per order: what the services' clients sent the broker during a run, from
//! each service's `kafka_requests_total` (librdkafka's statistics, every 5 s), divided by
//! the orders the run confirmed.
//!
//! Statistics are up to five seconds old when read, so the counts are read while the stack
//! is quiet: before the first order of the run (warm-up included) and [`SETTLE`] after the
//! last saga ended. Every order of the run is then inside the window, and the division is by
//! all of them, warm-up included. What the idle clients ask meanwhile (a fetch every
//! `KAFKA_FETCH_WAIT_MAX_MS`, heartbeats) is counted too; it is part of what they cost.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

/// How long after a run its last requests take to show: one statistics interval, and a
/// second for the scrape.
pub const SETTLE: Duration = Duration::from_secs(6);

/// The requests of every kind (`Produce`, `Fetch`, `Other`) the services had sent at one
/// moment, summed over their clients.
#[derive(Debug, Default)]
pub struct Sample(BTreeMap<String, f64>);

/// Reads `kafka_requests_total` from the `/metrics` of each service at `bases`.
pub async fn sample(http: &reqwest::Client, bases: &[&str]) -> anyhow::Result<Sample> {
    let mut sample = Sample::default();
    for base in bases {
        let url = format!("{}/metrics", base.trim_end_matches('/'));
        // A service that does not answer within seconds (one paused on purpose, say) makes
        // the count unknowable, not the run wait.
        let text = http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("reading {url}"))?
            .text()
            .await?;
        sample.add(&text);
    }
    Ok(sample)
}

impl Sample {
    /// Adds the request counts of one exposition.
    fn add(&mut self, exposition: &str) {
        for line in exposition.lines() {
            let Some(labels) = line.strip_prefix("kafka_requests_total{") else {
                continue;
            };
            let Some((labels, value)) = labels.split_once("} ") else {
                continue;
            };
            let request = labels
                .split(',')
                .find_map(|label| label.strip_prefix("request=\""))
                .and_then(|value| value.strip_suffix('"'));
            if let (Some(request), Ok(value)) = (request, value.trim().parse::<f64>()) {
                *self.0.entry(request.to_owned()).or_default() += value;
            }
        }
    }
}

/// The requests of each kind sent between two samples, per confirmed order; kinds of which
/// none were sent are left out.
pub fn per_order(before: &Sample, after: &Sample, confirmed: usize) -> BTreeMap<String, f64> {
    after
        .0
        .iter()
        .filter_map(|(request, &count)| {
            let sent = count - before.0.get(request).copied().unwrap_or(0.0);
            (sent > 0.0).then(|| (request.clone(), sent / confirmed.max(1) as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_order_sum_every_client_of_every_service_by_kind() {
        let mut before = Sample::default();
        before.add(
            "# TYPE kafka_requests counter\n\
             kafka_requests_total{client=\"producer\",request=\"Produce\"} 10\n\
             kafka_requests_total{client=\"consumer\",request=\"Fetch\"} 100\n\
             kafka_requests_total{client=\"consumer\",request=\"Other\"} 7\n\
             http_requests_total{route=\"/orders\",method=\"POST\",status=\"202\"} 5\n",
        );
        let mut after = Sample::default();
        after.add(
            "kafka_requests_total{client=\"producer\",request=\"Produce\"} 210\n\
             kafka_requests_total{client=\"producer\",request=\"Fetch\"} 0\n\
             kafka_requests_total{client=\"consumer\",request=\"Fetch\"} 300\n\
             kafka_requests_total{client=\"consumer\",request=\"Other\"} 7\n",
        );
        after.add("kafka_requests_total{client=\"consumer\",request=\"Fetch\"} 100\n");
        let per_order = per_order(&before, &after, 100);
        assert_eq!(per_order.len(), 2, "no Other was sent: {per_order:?}");
        assert_eq!(per_order["Produce"], 2.0);
        assert_eq!(per_order["Fetch"], 3.0, "two services' consumers together");
    }
}
