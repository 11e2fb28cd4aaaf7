//! The small runtime every service of the saga shares.
//!
//! - [`defaults`]: every setting's default, from its clap argument alone.
//! - [`duration`]: how duration settings are written (`5s`, or milliseconds).
//! - [`db`]: connecting to Postgres or SQLite through one driver, and migrations.
//! - [`kafka`]: the idempotent producer, at-least-once consumers, topic creation.
//! - [`outbox`]: the transactional outbox ([`outbox::enqueue`]) and its [`outbox::Relay`].
//! - [`consumer`]: the idempotent consumer that runs a service's [`consumer::Handler`].
//! - [`dlq`]: dead-letter topics for messages that can never be processed.
//! - [`health`]: what each part of a service says about itself, for readiness.
//! - [`housekeeping`]: retention of published outbox rows and processed-event records.
//! - [`trace`]: W3C trace context carried in Kafka headers.
//! - [`error_code`]: every error code of the HTTP APIs, with its status.
//! - [`http`]: JSON errors, extractors, health and metrics routes, common layers.
//! - [`admin`]: the admin token operator endpoints need (`Authorization: Bearer`).
//! - [`metrics`]: a per-service Prometheus registry.
//! - [`openapi`]: OpenAPI documents built from the request and response types.
//! - [`app`]: [`app::Runtime`] and [`app::App`], how a service is assembled and run.
//! - [`poll`]: waiting for something to happen, the one poll loop.
//! - [`backoff`]: exponential backoff with jitter.
//! - [`telemetry`]: logging setup and the shutdown signal.
//!
//! The delivery guarantees of the whole system rest on two rules this crate enforces: an
//! event is published only after the transaction that caused it committed, and an offset is
//! stored only after the transaction that handled its message committed.

pub mod admin;
pub mod app;
pub mod backoff;
pub mod consumer;
pub mod db;
pub mod defaults;
pub mod dlq;
pub mod duration;
pub mod error_code;
pub mod health;
pub mod housekeeping;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod openapi;
pub mod outbox;
pub mod poll;
pub mod serve;
pub mod telemetry;
pub mod trace;

pub use app::{App, CommonSettings, RunningApp, Runtime};
pub use consumer::{HandleError, Handler, Inbound};
pub use db::{Conn, Db, Migrations, Tx, now_ms};
pub use error_code::ErrorCode;
pub use http::{ApiError, ApiJson, ApiPath, RequestTrace};
pub use metrics::Metrics;
pub use outbox::Outbox;
pub use trace::TraceContext;
