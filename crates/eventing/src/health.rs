//! What `/health/ready` reports besides the database and the broker: each part of a service
//! (its consumer, its relay, each background worker) says here whether it is doing its job.
//!
//! A part is either up or failing with a reason and the time it started failing. Parts report
//! their own state as they learn it: the consumer says it holds no partition, the relay says
//! its producer hit a fatal error, the [`crate::app::App`] says a worker stopped. Readiness is
//! the conjunction of every part, so a service that has quietly stopped working stops being
//! ready, and the body of the 503 names the part and the reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The state of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartState {
    Up,
    /// Not doing its job, for the reason given, since the instant given.
    Failing {
        reason: String,
        since: Instant,
    },
}

/// Every part of one service and how it is. Cheap to clone; clones share the states.
#[derive(Debug, Clone, Default)]
pub struct Health {
    parts: Arc<Mutex<BTreeMap<String, PartState>>>,
}

impl Health {
    /// A registry with no part yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `part` as doing its job.
    pub fn up(&self, part: &str) {
        self.lock().insert(part.to_owned(), PartState::Up);
    }

    /// Marks `part` as failing. The first reason and time are kept while it keeps failing for
    /// the same reason, so that the report says how long it has been so.
    pub fn failing(&self, part: &str, reason: impl Into<String>) {
        let reason = reason.into();
        let mut parts = self.lock();
        match parts.get(part) {
            Some(PartState::Failing { reason: r, .. }) if *r == reason => {}
            _ => {
                tracing::warn!(part, %reason, "not ready");
                parts.insert(
                    part.to_owned(),
                    PartState::Failing {
                        reason,
                        since: Instant::now(),
                    },
                );
            }
        }
    }

    /// The state of `part`, if it reported one.
    pub fn state(&self, part: &str) -> Option<PartState> {
        self.lock().get(part).cloned()
    }

    /// Every part with its reason when failing: `(part, None)` for an up part.
    pub fn report(&self) -> Vec<(String, Option<String>)> {
        self.lock()
            .iter()
            .map(|(part, state)| {
                let reason = match state {
                    PartState::Up => None,
                    PartState::Failing { reason, since } => {
                        Some(format!("{reason} (for {} s)", since.elapsed().as_secs()))
                    }
                };
                (part.clone(), reason)
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PartState>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_part_is_named_with_its_reason_until_it_is_up_again() {
        let health = Health::new();
        let failing = |health: &Health| {
            health
                .report()
                .into_iter()
                .filter_map(|(part, reason)| Some((part, reason?)))
                .collect::<Vec<_>>()
        };
        health.up("relay");
        health.up("consumer");
        assert!(failing(&health).is_empty());
        health.failing("consumer", "held no partition");
        let now = failing(&health);
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].0, "consumer");
        assert!(now[0].1.starts_with("held no partition"), "{}", now[0].1);
        health.up("consumer");
        assert!(failing(&health).is_empty());
    }

    #[test]
    fn the_same_failure_keeps_its_first_time() {
        let health = Health::new();
        health.failing("relay", "fatal");
        let first = health.state("relay");
        std::thread::sleep(std::time::Duration::from_millis(5));
        health.failing("relay", "fatal");
        assert_eq!(health.state("relay"), first);
    }
}
