//! The service kit: what every HTTP program of the workspace shares, with no Kafka in it. The
//! saga's services build on it through `eventing`; the synchronous baseline, the data
//! platform's mock and the operator's console use it directly.
//!
//! - [`app`]: [`app::App`], one listener and its background workers, run until shutdown.
//! - [`http`]: JSON errors, extractors, and the layers around every API (spans, counting,
//!   load shedding, body limit, timeout, fallbacks).
//! - [`error_code`]: the generic error codes and how a service declares its own.
//! - [`health`]: `/health/live`, `/health/ready` with its [`health::Check`]s, `/metrics`.
//! - [`serve`]: the HTTP server with its connection limits and graceful drain.
//! - [`admin`]: the admin token operator endpoints need (`Authorization: Bearer`).
//! - [`openapi`]: OpenAPI documents built from the request and response types.
//! - [`metrics`]: a per-service Prometheus registry.
//! - [`db`]: connecting to Postgres or SQLite through one driver, and migrations.
//! - [`trace`]: W3C trace context, in HTTP headers and (through `eventing`) Kafka headers.
//! - [`telemetry`]: logging setup, the shutdown signal and how a program exits.
//! - [`defaults`]: every setting's default, from its clap argument alone.
//! - [`duration`]: how duration settings are written (`5s`, or milliseconds).
//! - [`backoff`]: exponential backoff with jitter.
//! - [`poll`]: waiting for something to happen, the one poll loop.
//! - [`wake`]: a wake-up signal between tasks.

pub mod admin;
pub mod app;
pub mod backoff;
pub mod db;
pub mod defaults;
pub mod duration;
pub mod error_code;
pub mod health;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod poll;
pub mod serve;
pub mod telemetry;
pub mod trace;
pub mod wake;

pub use app::{App, RunningApp};
pub use db::{Conn, Db, Migrations, Tx, now_ms};
pub use error_code::{Code, ErrorCode};
pub use http::{ApiError, ApiJson, ApiPath, RequestTrace};
pub use metrics::Metrics;
pub use trace::TraceContext;
