//! A stand-in for the external data platform the analytics forwarder delivers to.
//!
//! - `POST /v1/orders`: keeps the JSON body under its `Idempotency-Key` (required); a key seen
//!   before is answered 200 and counted as a duplicate, not kept twice. With the configured
//!   probability it answers 503 instead, after the configured latency.
//! - `GET /v1/orders`: everything kept, in arrival order, with counts of duplicates and
//!   failures.
//! - `GET /v1/settings`, `PUT /v1/settings {failure_rate?, latency_ms?, failure_status?,
//!   retry_after_s?}`: read or change the
//!   failure rate (0.0 to 1.0) and latency while running, so tests can take it down and back.
//!
//! It keeps everything in memory: it stands for a system outside ours.

pub mod error_code;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error_code::MockCode;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use kit::health::{Health, Observed};
use kit::metrics::Counters;
use kit::openapi::OpenApi;
use kit::{ApiError, ApiJson, App, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Settings of the mock, from flags or environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "data-platform-mock",
    about = "A stand-in for the external data platform"
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long = "http-addr", env = "HTTP_ADDR", default_value = "0.0.0.0:8090")]
    pub http_addr: SocketAddr,
    /// Share of `POST /v1/orders` answered 503, from 0.0 to 1.0.
    #[arg(long = "failure-rate", env = "FAILURE_RATE", default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Delay before every answer to `POST /v1/orders`.
    #[arg(
        long = "latency-ms",
        env = "LATENCY_MS",
        default_value = "0ms",
        value_parser = kit::duration::parse
    )]
    pub latency: Duration,
    /// The status of a failure on purpose: 503, or 429 (too many requests), 500, 502, 504.
    #[arg(long = "failure-status", env = "FAILURE_STATUS", default_value_t = 503)]
    pub failure_status: u16,
    /// `Retry-After` seconds sent with a failure on purpose; none when absent.
    #[arg(long = "retry-after-s", env = "RETRY_AFTER_S")]
    pub retry_after_s: Option<u64>,
    #[command(flatten)]
    pub http: kit::http::HttpSettings,
    #[command(flatten)]
    pub log: kit::telemetry::LogSettings,
}

impl Config {
    /// The mock on a free port of 127.0.0.1, healthy, everything else at its default: what
    /// tests start.
    pub fn local() -> Config {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Config::command()
            .mut_args(|arg| arg.env(clap::builder::Resettable::Reset))
            .try_get_matches_from(["data-platform-mock", "--http-addr", "127.0.0.1:0"])
            .expect("the defaults parse");
        Config::from_arg_matches(&matches).expect("the defaults parse")
    }
}

/// What the mock can be told to do while running.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub failure_rate: f64,
    pub latency_ms: u64,
    pub failure_status: u16,
    pub retry_after_s: Option<u64>,
}

/// The settings to change; the others stay as they are. The ranges are [`validate`]'s.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    /// The share of deliveries failed on purpose, 0.0 to 1.0.
    #[schemars(range(min = 0.0, max = 1.0))]
    failure_rate: Option<f64>,
    #[serde(default, deserialize_with = "kit::http::whole_opt")]
    #[schemars(range(max = MAX_LATENCY_MS))]
    latency_ms: Option<u64>,
    /// The status a failure on purpose answers with: one of [`FAILURE_STATUSES`] (or null,
    /// to leave it as it is).
    #[schemars(extend("enum" = [429, 500, 502, 503, 504, null]))]
    #[serde(default, deserialize_with = "kit::http::whole_opt")]
    failure_status: Option<u16>,
    /// Seconds; 0 sends no `Retry-After`.
    #[serde(default, deserialize_with = "kit::http::whole_opt")]
    #[schemars(range(max = MAX_RETRY_AFTER_S))]
    retry_after_s: Option<u64>,
}

/// The statuses a failure on purpose may answer with.
const FAILURE_STATUSES: [u16; 5] = [429, 500, 502, 503, 504];
/// The longest latency the mock can be told to add.
const MAX_LATENCY_MS: u64 = 60_000;
/// The longest `Retry-After` the mock can be told to send: a day.
const MAX_RETRY_AFTER_S: u64 = 86_400;

/// One kept delivery.
#[derive(Debug, Clone, Serialize, JsonSchema)]
struct Kept {
    idempotency_key: String,
    received_at: DateTime<Utc>,
    traceparent: Option<String>,
    body: Value,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    kept: Vec<Kept>,
    keys: std::collections::HashSet<String>,
    duplicates: u64,
    failed: u64,
}

#[derive(Clone)]
struct State {
    inner: Arc<Mutex<Inner>>,
    received: Received,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Binds and assembles the mock.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let settings = Settings {
        failure_rate: config.failure_rate,
        latency_ms: u64::try_from(config.latency.as_millis()).unwrap_or(u64::MAX),
        failure_status: config.failure_status,
        retry_after_s: config.retry_after_s,
    };
    validate(&settings).map_err(anyhow::Error::msg)?;
    let admin = kit::admin::AdminToken::of(&config.http)?;
    let metrics = Metrics::new();
    let state = State {
        inner: Arc::new(Mutex::new(Inner {
            settings,
            kept: Vec::new(),
            keys: Default::default(),
            duplicates: 0,
            failed: 0,
        })),
        received: Received::register(&metrics),
    };
    let listener = App::bind(config.http_addr).await?;
    let observed = Observed::new(metrics, Health::new());
    let api = router(state, admin);
    Ok(App::new(
        "data-platform-mock",
        listener,
        api,
        observed,
        &config.http,
    ))
}

/// The labels of `received_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The mock's one family, `received_total`, by outcome, every outcome at zero.
#[derive(Clone)]
struct Received {
    kept: Counter,
    duplicate: Counter,
    failed: Counter,
}

impl Received {
    fn register(metrics: &Metrics) -> Self {
        let family: Counters<OutcomeLabels> = metrics.register(
            "received",
            "Deliveries received, by outcome: kept, duplicate (an Idempotency-Key seen before), failed (on purpose)",
            Counters::default(),
        );
        let of = |outcome| family.get_or_create_owned(&OutcomeLabels { outcome });
        Received {
            kept: of("kept"),
            duplicate: of("duplicate"),
            failed: of("failed"),
        }
    }
}

/// Why settings are refused, if they are.
fn validate(settings: &Settings) -> Result<(), &'static str> {
    if !(0.0..=1.0).contains(&settings.failure_rate) {
        return Err("failure_rate must be 0.0 to 1.0");
    }
    if !FAILURE_STATUSES.contains(&settings.failure_status) {
        return Err("failure_status must be 429, 500, 502, 503 or 504");
    }
    if settings.latency_ms > MAX_LATENCY_MS {
        return Err("latency_ms must be at most 60000");
    }
    if settings
        .retry_after_s
        .is_some_and(|s| s > MAX_RETRY_AFTER_S)
    {
        return Err("retry_after_s must be at most 86400");
    }
    Ok(())
}

/// What the mock kept.
#[derive(Debug, Serialize, JsonSchema)]
struct Listing {
    /// How many distinct deliveries it kept.
    received: usize,
    /// How many deliveries repeated a kept `Idempotency-Key`.
    duplicates: u64,
    /// How many requests it failed on purpose.
    failed: u64,
    orders: Vec<Kept>,
}

/// What became of one delivery: `kept` or `duplicate`.
#[derive(Debug, Serialize, JsonSchema)]
struct Outcome {
    status: &'static str,
}

/// The API's operations, for `/openapi.json`.
pub fn openapi() -> Value {
    let mut api = OpenApi::new(
        "data-platform-mock",
        "A stand-in for the external data platform.",
    );
    api.operation("post", "/v1/orders", "Receive an order event")
        .idempotency_key(true, "a key seen before is a duplicate")
        .body::<serde_json::Map<String, Value>>()
        .response::<Outcome>(201, "kept")
        .response::<Outcome>(200, "a duplicate of a kept delivery")
        .errors(&[400, 413, 415, 422, 503])
        .add();
    api.operation("get", "/v1/orders", "What the mock kept")
        .response::<Listing>(200, "everything kept, with counts")
        .add();
    api.operation(
        "get",
        "/v1/settings",
        "The failure rate and latency in force",
    )
    .response::<Settings>(200, "the settings")
    .add();
    api.operation(
        "put",
        "/v1/settings",
        "Change the failure rate or latency (operator)",
    )
    .admin()
    .body::<SettingsChange>()
    .response::<Settings>(200, "the settings now in force")
    .errors(&[400, 413, 415, 422])
    .add();
    api.document()
}

fn router(state: State, admin: kit::admin::AdminToken) -> Router {
    // Switching the data platform off is an operator's act; reading the settings is not.
    let operator = kit::admin::guard(
        Router::new().route("/v1/settings", axum::routing::put(change_settings)),
        admin,
    );
    Router::new()
        .route("/v1/orders", get(list).post(receive))
        .route("/v1/settings", get(show_settings))
        .merge(operator)
        .with_state(state)
        .merge(kit::openapi::route(openapi()))
}

async fn receive(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Map<String, Value>>,
) -> Response {
    let key = match kit::http::idempotency_key(&headers) {
        Ok(Some(key)) => key,
        Ok(None) => {
            return ApiError::new(
                MockCode::MissingIdempotencyKey,
                "send an Idempotency-Key header",
            )
            .into_response();
        }
        Err(invalid) => return invalid.into_response(),
    };
    let settings = state.lock().settings;
    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }
    if rand::rng().random_bool(settings.failure_rate) {
        state.lock().failed += 1;
        state.received.failed.inc();
        let status = StatusCode::from_u16(settings.failure_status)
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut response = ApiError::new(
            MockCode::Unavailable,
            "the data platform is failing on purpose",
        )
        .into_response();
        // The status of a failure on purpose is a setting.
        *response.status_mut() = status;
        if let Some(seconds) = settings.retry_after_s
            && let Ok(value) = seconds.to_string().parse()
        {
            response.headers_mut().insert("retry-after", value);
        }
        return response;
    }
    let mut inner = state.lock();
    if !inner.keys.insert(key.clone()) {
        inner.duplicates += 1;
        state.received.duplicate.inc();
        return (
            StatusCode::OK,
            Json(Outcome {
                status: "duplicate",
            }),
        )
            .into_response();
    }
    inner.kept.push(Kept {
        idempotency_key: key,
        received_at: Utc::now(),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: Value::Object(body),
    });
    state.received.kept.inc();
    (StatusCode::CREATED, Json(Outcome { status: "kept" })).into_response()
}

async fn list(Extract(state): Extract<State>) -> Json<Listing> {
    let inner = state.lock();
    Json(Listing {
        received: inner.kept.len(),
        duplicates: inner.duplicates,
        failed: inner.failed,
        orders: inner.kept.clone(),
    })
}

async fn show_settings(Extract(state): Extract<State>) -> Json<Settings> {
    Json(state.lock().settings)
}

async fn change_settings(
    Extract(state): Extract<State>,
    ApiJson(change): ApiJson<SettingsChange>,
) -> Result<Json<Settings>, ApiError> {
    let mut inner = state.lock();
    let settings = Settings {
        failure_rate: change.failure_rate.unwrap_or(inner.settings.failure_rate),
        latency_ms: change.latency_ms.unwrap_or(inner.settings.latency_ms),
        failure_status: change
            .failure_status
            .unwrap_or(inner.settings.failure_status),
        retry_after_s: match change.retry_after_s {
            Some(0) => None,
            Some(seconds) => Some(seconds),
            None => inner.settings.retry_after_s,
        },
    };
    validate(&settings).map_err(|message| ApiError::new(MockCode::InvalidSettings, message))?;
    inner.settings = settings;
    tracing::info!(?settings, "settings changed");
    Ok(Json(settings))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_settings_are_well_formed() {
        super::Config::command().debug_assert();
    }
}
