//! A small Prometheus registry: counters and gauges with labels, rendered as text.
//!
//! It is deliberately tiny: a service counts what happens with [`Metrics::inc`] and sets
//! what it measures with [`Metrics::set`], and `GET /metrics` renders everything. One registry
//! per running service (not a global), so that tests running several services in one process
//! read each service's own figures.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

type Labels = Vec<(String, String)>;

#[derive(Debug, Default)]
struct Family {
    gauge: bool,
    values: BTreeMap<Labels, f64>,
}

/// A registry of counters and gauges. Cheap to clone; clones share the figures.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    families: Arc<Mutex<BTreeMap<String, Family>>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &str, labels: &[(&str, &str)], n: u64) {
        self.update(name, labels, false, |v| *v += n as f64);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.update(name, labels, true, |v| *v = value);
    }

    /// The current value of a counter or gauge, 0 when never touched.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let families = self.lock();
        families
            .get(name)
            .and_then(|family| family.values.get(&owned(labels)))
            .copied()
            .unwrap_or(0.0)
    }

    /// The Prometheus text exposition of every figure.
    pub fn render(&self) -> String {
        let families = self.lock();
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = if family.gauge { "gauge" } else { "counter" };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &family.values {
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels));
            }
        }
        out
    }

    fn update(&self, name: &str, labels: &[(&str, &str)], gauge: bool, f: impl FnOnce(&mut f64)) {
        let mut families = self.lock();
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            gauge,
            values: BTreeMap::new(),
        });
        f(family.values.entry(owned(labels)).or_insert(0.0));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Family>> {
        // A panic while holding the lock leaves only numbers behind; keep serving them.
        self.families.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_as_prometheus_text() {
        let metrics = Metrics::new();
        metrics.inc("events_handled_total", &[("event_type", "OrderCreated")]);
        metrics.inc("events_handled_total", &[("event_type", "OrderCreated")]);
        metrics.set("outbox_backlog", &[], 3.0);
        let text = metrics.render();
        assert!(text.contains("# TYPE events_handled_total counter"));
        assert!(text.contains("events_handled_total{event_type=\"OrderCreated\"} 2"));
        assert!(text.contains("# TYPE outbox_backlog gauge\noutbox_backlog 3"));
        assert_eq!(
            metrics.get("events_handled_total", &[("event_type", "OrderCreated")]),
            2.0
        );
    }
}
