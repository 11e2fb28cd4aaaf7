//! Each service's Prometheus registry, kept by `prometheus-client`: counters, gauges and
//! histograms with labels, every family with its HELP and TYPE, rendered as OpenMetrics text
//! for `GET /metrics`.
//!
//! A family must be described before it is used, with its help text: [`Metrics::new`]
//! describes the families the kit fills (HTTP), the runtime describes its own, and a service
//! describes its own with [`Metrics::describe_counter`] and the
//! like when it is built. Using a family nobody described is a bug: it panics in debug builds
//! and is dropped with an error log in release builds, so that `/metrics` never shows a
//! family without help.
//!
//! A series with labels exists from the first time it is touched; code that knows its label
//! values at start touches them with [`Metrics::zero`], so that an alert on, say, dead
//! letters sees 0 rather than "no data".
//!
//! One registry per running service (not a global), so that tests running several services in
//! one process read each service's own figures.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A series' labels, as `(name, value)` pairs in the order the caller gives them.
type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds in seconds for latencies from a millisecond to a minute: HTTP requests,
/// handling, publishing, deliveries and sagas alike, so that dashboards compare them.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The families the kit fills (HTTP requests), described in every registry but an empty one.
const COMMON: &[(&str, Kind, &str)] = &[
    (
        "http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by route template, method and status",
    ),
    (
        "http_request_duration_seconds",
        Kind::Histogram,
        "Time from a request's arrival to its response, by route template, method and status",
    ),
];

/// The type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Observations in seconds, in buckets from 1 ms to 2 minutes.
    Histogram,
}

#[derive(Default)]
struct Inner {
    registry: Registry,
    counters: HashMap<String, Counters>,
    gauges: HashMap<String, Gauges>,
    histograms: HashMap<String, Histograms>,
}

/// A service's registry. Cheap to clone; clones share the figures.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<RwLock<Inner>>,
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
    /// A registry with the kit's families (HTTP requests) described.
    pub fn new() -> Self {
        let metrics = Metrics::empty();
        for (name, kind, help) in COMMON {
            metrics.describe(name, *kind, help);
        }
        metrics
    }

    /// A registry with no family at all.
    pub fn empty() -> Self {
        Metrics {
            inner: Arc::new(RwLock::new(Inner::default())),
        }
    }

    /// Describes a counter. Its name ends in `_total`, as it is exposed.
    pub fn describe_counter(&self, name: &str, help: &str) {
        self.describe(name, Kind::Counter, help);
    }

    /// Describes a gauge.
    pub fn describe_gauge(&self, name: &str, help: &str) {
        self.describe(name, Kind::Gauge, help);
    }

    /// Describes a histogram of seconds.
    pub fn describe_histogram(&self, name: &str, help: &str) {
        self.describe(name, Kind::Histogram, help);
    }

    /// Describes a family once; describing it again changes nothing.
    pub fn describe(&self, name: &str, kind: Kind, help: &str) {
        let mut inner = self.write();
        let inner = &mut *inner;
        if inner.counters.contains_key(name)
            || inner.gauges.contains_key(name)
            || inner.histograms.contains_key(name)
        {
            return;
        }
        match kind {
            Kind::Counter => {
                let family = Counters::default();
                // The registry appends `_total` to a counter's name itself.
                let bare = name.strip_suffix("_total").unwrap_or(name);
                inner.registry.register(bare, help, family.clone());
                inner.counters.insert(name.to_owned(), family);
            }
            Kind::Gauge => {
                let family = Gauges::default();
                inner.registry.register(name, help, family.clone());
                inner.gauges.insert(name.to_owned(), family);
            }
            Kind::Histogram => {
                let family = Histograms::new_with_constructor(latency_histogram as fn() -> _);
                inner.registry.register(name, help, family.clone());
                inner.histograms.insert(name.to_owned(), family);
            }
        }
    }

    /// Makes a series exist, at zero if it is new.
    pub fn zero(&self, name: &str, labels: &[(&str, &str)]) {
        let inner = self.read();
        let labels = owned(labels);
        if let Some(family) = inner.counters.get(name) {
            drop(family.get_or_create(&labels));
        } else if let Some(family) = inner.gauges.get(name) {
            drop(family.get_or_create(&labels));
        } else if let Some(family) = inner.histograms.get(name) {
            drop(family.get_or_create(&labels));
        } else {
            undescribed(name);
        }
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], n: u64) {
        match self.read().counters.get(name) {
            Some(family) => {
                family.get_or_create(&owned(labels)).inc_by(n);
            }
            None => undescribed(name),
        }
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        match self.read().gauges.get(name) {
            Some(family) => {
                family.get_or_create(&owned(labels)).set(value);
            }
            None => undescribed(name),
        }
    }

    /// Records one observation of a histogram, in seconds.
    pub fn observe(&self, name: &str, labels: &[(&str, &str)], seconds: f64) {
        match self.read().histograms.get(name) {
            Some(family) => family.get_or_create(&owned(labels)).observe(seconds),
            None => undescribed(name),
        }
    }

    /// The current value of a counter or gauge, or a histogram's count of observations; 0
    /// when the series was never touched.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let inner = self.read();
        let labels = owned(labels);
        if let Some(family) = inner.counters.get(name) {
            family.get(&labels).map_or(0.0, |c| c.get() as f64)
        } else if let Some(family) = inner.gauges.get(name) {
            family.get(&labels).map_or(0.0, |g| g.get())
        } else if let Some(family) = inner.histograms.get(name) {
            family.get(&labels).map_or(0.0, |h| h.count() as f64)
        } else {
            0.0
        }
    }

    /// The OpenMetrics text exposition of every family ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.read().registry);
        // A family writes braces even for a series without labels (`name{} 0`); both are
        // valid, the bare name is what people expect to read.
        text.replace("{} ", " ")
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock leaves only numbers behind; keep serving them.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A family used without a description: a bug in the code that uses it.
fn undescribed(name: &str) {
    debug_assert!(
        false,
        "the metric family {name} is used but was never described"
    );
    tracing::error!(
        metric = name,
        "a metric family used but never described is left out of /metrics"
    );
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_described_by_a_service_is_rendered_with_its_help() {
        let metrics = Metrics::new();
        metrics.describe_histogram("saga_duration_seconds", "Time from an order to its end");
        metrics.zero("saga_duration_seconds", &[("outcome", "confirmed")]);
        let text = metrics.render();
        assert!(text.contains("# HELP saga_duration_seconds Time from an order to its end."));
        assert!(text.contains("saga_duration_seconds_count{outcome=\"confirmed\"} 0"));
    }
}
