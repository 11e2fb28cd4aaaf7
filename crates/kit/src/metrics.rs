//! Each service's Prometheus registry, kept by `prometheus-client` and rendered as OpenMetrics
//! text for `GET /metrics`, and the kit's own families (HTTP requests).
//!
//! Families are typed: each module that fills some declares them once, as a struct of
//! [`Counters`], [`Gauges`] and [`Histograms`] keyed by a label struct that derives
//! `EncodeLabelSet`, and registers them with their help text through [`Metrics::register`]
//! when the service is built. A misspelt family or label therefore does not compile, and a
//! family is never shown without its help.
//!
//! A labelled series exists from the first time it is touched. Code that knows its label
//! values at start resolves those series then (`Family::get_or_create_owned`), which both
//! makes them exist at zero, so that an alert on, say, dead letters sees 0 rather than "no
//! data", and saves a lookup on every later use. An unlabelled family is a plain metric, at
//! zero from its registration.
//!
//! One registry per running service (not a global), so that tests running several services in
//! one process read each service's own figures.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::histogram::Histogram;

/// A family of counters, one series per label set `L`.
pub type Counters<L> = Family<L, Counter>;
/// A gauge that holds any number (a fraction, a count, an age in seconds).
pub type Level = Gauge<f64, AtomicU64>;
/// A family of [`Level`]s, one series per label set `L`.
pub type Gauges<L> = Family<L, Level>;
/// A family of latency histograms in seconds ([`LATENCY_BUCKETS`]), one series per label
/// set `L`. Make one with [`histograms`].
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds in seconds for latencies from a millisecond to a minute: HTTP requests,
/// handling, publishing, deliveries and sagas alike, so that dashboards compare them.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// One latency histogram, in [`LATENCY_BUCKETS`].
pub fn histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// An empty family of latency histograms.
pub fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Histograms::new_with_constructor(histogram as fn() -> Histogram)
}

/// The labels of an HTTP request's series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/orders/{id}`), or `unmatched`.
    pub route: String,
    pub method: &'static str,
    pub status: u16,
}

/// The families the kit fills: every request the API layers see.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// `http_requests_total`.
    pub requests: Counters<RequestLabels>,
    /// `http_request_duration_seconds`.
    pub duration: Histograms<RequestLabels>,
}

impl HttpMetrics {
    fn register(metrics: &Metrics) -> Self {
        HttpMetrics {
            requests: metrics.register(
                "http_requests",
                "HTTP requests answered, by route template, method and status",
                Counters::default(),
            ),
            duration: metrics.register(
                "http_request_duration_seconds",
                "Time from a request's arrival to its response, by route template, method and status",
                histograms(),
            ),
        }
    }

    /// Counts one request answered after `seconds`.
    pub fn answered(&self, labels: &RequestLabels, seconds: f64) {
        self.requests.get_or_create(labels).inc();
        self.duration.get_or_create(labels).observe(seconds);
    }
}

/// A service's registry. Cheap to clone; clones share the figures.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    http: HttpMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the kit's families (HTTP requests) registered first.
    pub fn new() -> Self {
        let registry = Arc::new(RwLock::new(Registry::default()));
        let mut metrics = Metrics {
            registry,
            http: HttpMetrics {
                requests: Counters::default(),
                duration: histograms(),
            },
        };
        metrics.http = HttpMetrics::register(&metrics);
        metrics
    }

    /// Registers a family (or an unlabelled metric) under `name` with its `help`, and gives
    /// it back to be kept by the code that fills it. A counter's name is given without its
    /// `_total`, which the exposition adds. Families show in `/metrics` in the order they
    /// were registered.
    pub fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        self.write().register(name, help, metric.clone());
        metric
    }

    /// The kit's HTTP families.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The OpenMetrics text exposition of every family ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.read());
        text
    }

    /// The value of one series as `/metrics` shows it: `series` is its exposed name (with
    /// `_total`, or a histogram's `_count`), `labels` its labels in any order, and a series
    /// never touched reads 0. For tests and tools, which read what an operator reads; the
    /// code that fills a family keeps it typed.
    ///
    /// # Panics
    /// If no family of that name is registered: a misspelt name in a test must not read 0.
    pub fn sample(&self, series: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.render();
        let family = ["_total", "_count", "_sum", "_bucket"]
            .iter()
            .find_map(|suffix| series.strip_suffix(suffix))
            .filter(|family| text.contains(&format!("# TYPE {family} ")))
            .unwrap_or(series);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no metric family {family} is registered"
        );
        let mut wanted: Vec<(&str, &str)> = labels.to_vec();
        wanted.sort_unstable();
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(parse_sample)
            .map(|(name, mut found, value)| {
                found.sort_unstable();
                (name, found, value)
            })
            .find(|(name, found, _)| *name == series && *found == wanted)
            .map_or(0.0, |(_, _, value)| value)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        // A panic while holding the lock leaves only numbers behind; keep serving them.
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sample's labels as `(name, value)` pairs.
type SampleLabels<'a> = Vec<(&'a str, &'a str)>;

/// One exposition line, `name{k="v",…} value`, as its name, labels and value. Our label values
/// hold no quotes or commas, which keeps this simple.
fn parse_sample(line: &str) -> Option<(&str, SampleLabels<'_>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, labels)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let labels = labels
        .strip_suffix('}')?
        .split(',')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key, value.trim_matches('"')))
        })
        .collect();
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Outcome {
        outcome: &'static str,
    }

    #[test]
    fn a_family_registered_by_a_service_is_rendered_with_its_help() {
        let metrics = Metrics::new();
        let sagas: Histograms<Outcome> = metrics.register(
            "saga_duration_seconds",
            "Time from an order to its end",
            histograms(),
        );
        drop(sagas.get_or_create(&Outcome {
            outcome: "confirmed",
        }));
        let text = metrics.render();
        assert!(text.contains("# HELP saga_duration_seconds Time from an order to its end."));
        assert!(text.contains("saga_duration_seconds_count{outcome=\"confirmed\"} 0"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn an_unlabelled_metric_shows_at_zero_with_a_bare_name() {
        let metrics = Metrics::new();
        let _: Counter =
            metrics.register("orders_timed_out", "Orders timed out", Counter::default());
        let _: Level = metrics.register("outbox_backlog", "Rows waiting", Level::default());
        let text = metrics.render();
        assert!(text.contains("\norders_timed_out_total 0\n"), "{text}");
        assert!(text.contains("\noutbox_backlog 0.0\n"), "{text}");
    }

    #[test]
    fn a_sample_is_read_by_its_exposed_name_and_labels_in_any_order() {
        let metrics = Metrics::new();
        let labels = RequestLabels {
            route: "/orders".into(),
            method: "POST",
            status: 201,
        };
        metrics.http().answered(&labels, 0.004);
        metrics.http().answered(&labels, 0.004);
        let read = [("status", "201"), ("method", "POST"), ("route", "/orders")];
        assert_eq!(metrics.sample("http_requests_total", &read), 2.0);
        assert_eq!(
            metrics.sample("http_request_duration_seconds_count", &read),
            2.0
        );
        assert_eq!(
            metrics.sample("http_requests_total", &[("route", "/nowhere")]),
            0.0
        );
    }

    #[test]
    #[should_panic(expected = "no metric family http_reqests")]
    fn a_misspelt_family_in_a_sample_is_refused() {
        Metrics::new().sample("http_reqests_total", &[]);
    }
}
