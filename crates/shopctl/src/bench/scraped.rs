//! What the services count themselves, read from their `/metrics` during a run: the requests
//! their Kafka clients sent (`kafka_requests_total`, librdkafka's statistics, every 5 s), and
//! on SQLite the transactions their database committed (`sqlite_commits_total`), each divided
//! by the orders the run confirmed.
//!
//! Statistics are up to five seconds old when read, so the counts are read while the stack
//! is quiet: before the first order of the run (warm-up included) and [`SETTLE`] after the
//! last saga ended. Every order of the run is then inside the window, and the division is by
//! all of them, warm-up included. What the idle services do meanwhile (a fetch every
//! `KAFKA_FETCH_WAIT_MAX_MS`, heartbeats, a relay's look at its outbox) is counted too; it is
//! part of what they cost.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

/// How long after a run its last requests take to show: one statistics interval, and a
/// second for the scrape.
pub const SETTLE: Duration = Duration::from_secs(6);

/// What the services had counted at one moment.
#[derive(Debug, Default)]
pub struct Sample {
    /// Requests of each kind (`Produce`, `Fetch`, `Other`), summed over every client of every
    /// service.
    requests: BTreeMap<String, f64>,
    /// Commits of each service's SQLite database, by service; none on Postgres.
    sqlite_commits: BTreeMap<String, f64>,
}

/// Reads the counts from the `/metrics` of each service, given as its name and base URL.
pub async fn sample(http: &reqwest::Client, services: &[(&str, &str)]) -> anyhow::Result<Sample> {
    let mut sample = Sample::default();
    for (service, base) in services {
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
        sample.add(service, &text);
    }
    Ok(sample)
}

impl Sample {
    /// Adds the counts of one service's exposition.
    fn add(&mut self, service: &str, exposition: &str) {
        for (labels, value) in samples(exposition, "kafka_requests_total") {
            let request = labels
                .split(',')
                .find_map(|label| label.strip_prefix("request=\""))
                .and_then(|value| value.strip_suffix('"'));
            if let Some(request) = request {
                *self.requests.entry(request.to_owned()).or_default() += value;
            }
        }
        for (_, value) in samples(exposition, "sqlite_commits_total") {
            *self.sqlite_commits.entry(service.to_owned()).or_default() += value;
        }
    }
}

/// The samples of `family` in an exposition: each one's label text (without the braces;
/// empty when it has none) and its value.
fn samples<'t>(exposition: &'t str, family: &str) -> impl Iterator<Item = (&'t str, f64)> {
    exposition.lines().filter_map(move |line| {
        let rest = line.strip_prefix(family)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        Some((labels, value.trim().parse().ok()?))
    })
}

/// The requests of each kind sent between two samples, per confirmed order; kinds of which
/// none were sent are left out.
pub fn requests_per_order(
    before: &Sample,
    after: &Sample,
    confirmed: usize,
) -> BTreeMap<String, f64> {
    per_order(&before.requests, &after.requests, confirmed)
}

/// The transactions each service's SQLite database committed between two samples, per
/// confirmed order; empty when the services are on Postgres.
pub fn sqlite_commits_per_order(
    before: &Sample,
    after: &Sample,
    confirmed: usize,
) -> BTreeMap<String, f64> {
    per_order(&before.sqlite_commits, &after.sqlite_commits, confirmed)
}

fn per_order(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    confirmed: usize,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(key, &count)| {
            let counted = count - before.get(key).copied().unwrap_or(0.0);
            (counted > 0.0).then(|| (key.clone(), counted / confirmed.max(1) as f64))
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
            "order-service",
            "# TYPE kafka_requests counter\n\
             kafka_requests_total{client=\"producer\",request=\"Produce\"} 10\n\
             kafka_requests_total{client=\"consumer\",request=\"Fetch\"} 100\n\
             kafka_requests_total{client=\"consumer\",request=\"Other\"} 7\n\
             http_requests_total{route=\"/orders\",method=\"POST\",status=\"202\"} 5\n",
        );
        let mut after = Sample::default();
        after.add(
            "order-service",
            "kafka_requests_total{client=\"producer\",request=\"Produce\"} 210\n\
             kafka_requests_total{client=\"producer\",request=\"Fetch\"} 0\n\
             kafka_requests_total{client=\"consumer\",request=\"Fetch\"} 300\n\
             kafka_requests_total{client=\"consumer\",request=\"Other\"} 7\n",
        );
        after.add(
            "product-service",
            "kafka_requests_total{client=\"consumer\",request=\"Fetch\"} 100\n",
        );
        let per_order = requests_per_order(&before, &after, 100);
        assert_eq!(per_order.len(), 2, "no Other was sent: {per_order:?}");
        assert_eq!(per_order["Produce"], 2.0);
        assert_eq!(per_order["Fetch"], 3.0, "two services' consumers together");
    }

    #[test]
    fn sqlite_commits_per_order_are_each_services_own() {
        let mut before = Sample::default();
        before.add(
            "order-service",
            "# TYPE sqlite_commits counter\nsqlite_commits_total 40\n",
        );
        before.add("coupon-service", "sqlite_commits_total 7\n");
        let mut after = Sample::default();
        after.add(
            "order-service",
            "sqlite_commits_total 340\nsqlite_commits_created 1.7e9\n",
        );
        after.add("coupon-service", "sqlite_commits_total 7\n");
        after.add("product-service", "sqlite_commits_total 150\n");
        after.add(
            "analytics-forwarder",
            "kafka_requests_total{request=\"Fetch\"} 3\n",
        );
        let per_order = sqlite_commits_per_order(&before, &after, 100);
        assert_eq!(
            per_order,
            BTreeMap::from([
                ("order-service".to_owned(), 3.0),
                ("product-service".to_owned(), 1.5),
            ]),
            "the coupon service committed nothing, the forwarder is on Postgres"
        );
    }
}
