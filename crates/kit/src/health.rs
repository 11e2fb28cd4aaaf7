//! `GET /health/live`, `GET /health/ready` and `GET /metrics`, and what readiness is made of.
//!
//! Readiness has two sources:
//! - [`Check`]s look at what lives outside the process (the database, the broker), at most
//!   once per [`LOOK_EVERY`], whoever asks and however often.
//! - [`Health`] holds what each part of a service (its consumer, its relay, each background
//!   worker) says about itself as it learns it: the consumer says it holds no partition, the
//!   relay says its producer hit a fatal error, the [`crate::app::App`] says a worker stopped.
//!
//! A service is ready when every check and every part is up, so a service that has quietly
//! stopped working stops being ready, and the body of the 503 names the part and the reason.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

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

    /// Marks `part` as not doing its job yet because it is still starting: failing for
    /// `reason`, as [`Self::failing`] does, but logged only at debug level, since every
    /// start goes through it.
    pub fn starting(&self, part: &str, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::debug!(part, %reason, "not ready yet");
        self.lock().insert(
            part.to_owned(),
            PartState::Failing {
                reason,
                since: Instant::now(),
            },
        );
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

/// One look at something outside the process that a service needs to do its job.
///
/// A check says what is wrong in words of its own (`"the database does not answer"`), never
/// with the error behind it, which it logs: readiness is public. It bounds its own work
/// within [`CHECK_TIMEOUT`]; one that takes longer still is reported as not answering.
pub trait Check: Send + Sync + 'static {
    /// What the check is called in readiness's `checks` and `failing`.
    fn name(&self) -> &'static str;

    /// Looks once: `None` when all is well, else what is wrong.
    fn look(&self) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>>;
}

/// What the health and metrics routes look at: the checks, the parts' own reports, and the
/// registry `/metrics` renders.
#[derive(Clone)]
pub struct Observed {
    checks: Vec<Arc<dyn Check>>,
    at_once: Vec<(&'static str, AtOnce)>,
    pub metrics: Metrics,
    pub health: Health,
}

/// A check of the process's own state, cheap and never blocking: asked on every readiness
/// request rather than once per look.
type AtOnce = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl Observed {
    /// Readiness from `health`'s parts alone, metrics from `metrics`.
    pub fn new(metrics: Metrics, health: Health) -> Self {
        Observed {
            checks: Vec::new(),
            at_once: Vec::new(),
            metrics,
            health,
        }
    }

    /// Adds a check of the process's own state called `name`, asked on every readiness request
    /// (and reported after the checks that look outside): `None` when all is well.
    pub fn at_once(
        mut self,
        name: &'static str,
        check: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.at_once.push((name, Arc::new(check)));
        self
    }

    /// Adds a check, reported after those added before it.
    pub fn check(mut self, check: impl Check) -> Self {
        self.checks.push(Arc::new(check));
        self
    }
}

/// `GET /health/live`, `GET /health/ready` and `GET /metrics`.
///
/// They are public (a load balancer and Prometheus call them on the API's port), so they are
/// kept cheap whoever calls them and however often: the checks are looked at once per
/// [`LOOK_EVERY`] by whichever request finds the last look stale, while every other request
/// answers from that last look ([`Looks`]), and at most [`MAX_CONCURRENT_CHECKS`] of them are
/// answered at once (more get 503 `overloaded`). A flood of `GET /metrics` therefore costs
/// rendering alone and never takes the API's database connections from its real work; a
/// service with nothing to do looks at nothing.
pub fn routes(observed: Observed) -> Router {
    let state = Watched {
        observed,
        looks: Arc::new(Looks::default()),
    };
    let in_flight = Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS));
    Router::new()
        .route(
            "/health/live",
            get(|| async { Json(json!({ "status": "live" })) }),
        )
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(middleware::from_fn_with_state(
            in_flight,
            crate::http::shed_load,
        ))
}

/// How long each check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How old the last look may be before a request looks again.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Most health and metrics requests answered at once.
pub const MAX_CONCURRENT_CHECKS: usize = 8;

#[derive(Clone)]
struct Watched {
    observed: Observed,
    looks: Arc<Looks>,
}

/// The last look at what lives outside the process, shared by the health and metrics routes.
#[derive(Default)]
struct Looks {
    last: Mutex<Option<Look>>,
    /// Held by the one request that is looking; the others answer from the last look.
    looking: tokio::sync::Mutex<()>,
}

/// What one look found: each check by name, with what is wrong when it is down.
#[derive(Clone)]
struct Look {
    at: Instant,
    found: Vec<(&'static str, Option<String>)>,
}

impl Looks {
    fn last(&self) -> Option<Look> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The last look if it is recent, else a new one: taken by this request if no other is
    /// taking one, else the last (or, before the first, the one being taken).
    async fn current(&self, observed: &Observed) -> Look {
        if let Some(last) = self.last().filter(|l| l.at.elapsed() < LOOK_EVERY) {
            return last;
        }
        let guard = match self.looking.try_lock() {
            Ok(guard) => guard,
            Err(_) => match self.last() {
                Some(last) => return last,
                None => self.looking.lock().await,
            },
        };
        // Another request may have looked while this one waited for the lock.
        if let Some(last) = self.last().filter(|l| l.at.elapsed() < LOOK_EVERY) {
            return last;
        }
        let look = look(observed).await;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(look.clone());
        drop(guard);
        look
    }
}

/// Runs every check once, all at the same time. A check that overruns its bound by a second
/// is reported as not answering, so that one hung check cannot hold readiness.
async fn look(observed: &Observed) -> Look {
    let backstop = CHECK_TIMEOUT + Duration::from_secs(1);
    let found = futures::future::join_all(observed.checks.iter().map(|check| async move {
        let name = check.name();
        let problem = match tokio::time::timeout(backstop, check.look()).await {
            Ok(problem) => problem,
            Err(_) => {
                tracing::warn!(check = name, "readiness: the check did not answer in time");
                Some(format!("the {name} did not answer in time"))
            }
        };
        (name, problem)
    }))
    .await;
    Look {
        at: Instant::now(),
        found,
    }
}

/// Ready when every check passes and every part that reports on itself ([`Health`]) is up.
/// Otherwise 503, with `failing` naming each that is not and what is wrong, in words of our
/// own: the errors behind them are in the log, not in a public answer.
async fn ready(State(watched): State<Watched>) -> Response {
    let observed = &watched.observed;
    let look = watched.looks.current(observed).await;
    let mut checks = serde_json::Map::new();
    let mut failing = serde_json::Map::new();
    let at_once = observed
        .at_once
        .iter()
        .map(|(name, check)| (*name, check()));
    let found = look
        .found
        .into_iter()
        .chain(at_once)
        .map(|(part, problem)| (part.to_owned(), problem));
    for (part, problem) in found.chain(observed.health.report()) {
        checks.insert(
            part.clone(),
            json!(if problem.is_some() { "down" } else { "up" }),
        );
        if let Some(problem) = problem {
            failing.insert(part, json!(problem));
        }
    }
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if failing.is_empty() { "ready" } else { "not_ready" },
        "checks": checks,
        "failing": failing,
    });
    (status, Json(body)).into_response()
}

/// The registry, after the checks have had their look: a check may set gauges as it looks.
async fn metrics(State(watched): State<Watched>) -> Response {
    watched.looks.current(&watched.observed).await;
    (
        [("content-type", crate::metrics::CONTENT_TYPE)],
        watched.observed.metrics.render(),
    )
        .into_response()
}

/// The readiness [`Check`] of a database: it answers a query.
#[derive(Debug, Clone)]
pub struct Answers {
    db: crate::db::Db,
}

impl Answers {
    /// The check of `db`.
    pub fn new(db: crate::db::Db) -> Self {
        Answers { db }
    }
}

impl Check for Answers {
    fn name(&self) -> &'static str {
        "database"
    }

    fn look(&self) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>> {
        Box::pin(async move {
            let query = sqlx::query("SELECT 1").execute(&self.db);
            answered(tokio::time::timeout(CHECK_TIMEOUT, query).await)
        })
    }
}

/// What readiness says of a database from the outcome of a look bounded by
/// [`CHECK_TIMEOUT`]; the error itself goes to the log.
pub fn answered<T>(
    outcome: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>,
) -> Option<String> {
    match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the database does not answer");
            Some("the database does not answer".to_owned())
        }
        Err(_) => {
            tracing::warn!("readiness: the database did not answer within 2 s");
            Some("the database did not answer within 2 s".to_owned())
        }
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
