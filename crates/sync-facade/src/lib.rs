//! The synchronous baseline: the design document's old `OrderFacade`, kept to measure the
//! saga against.
//!
//! One service, one database, no broker. `POST /orders` takes the saga's request body and,
//! in one request and one transaction, takes the stock line by line, applies the coupon,
//! creates the order and calls the data platform; it answers only after all of that, with
//! the order CONFIRMED, or an error and nothing changed. Its latency therefore includes the
//! data platform's, and when the data platform fails the order fails: the coupling the saga
//! removes. `shopctl bench --target` drives it like the saga.
//!
//! - [`http`]: the API (`POST /products`, `POST /coupons`, `GET /catalog/{id}`,
//!   `POST /orders`, `GET /orders/{id}`) and the health routes.
//! - [`store`]: every SQL statement.
//!
//! Validation, discounts and the product view are the services' own, taken from their crates.

pub mod error_code;
pub mod http;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use kit::db::{DatabaseSettings, Migrations, connect_and_migrate};
use kit::health::{Answers, Health, Observed};
use kit::{App, Metrics};

pub const SERVICE: &str = "sync-facade";

/// Its own schema, for Postgres and SQLite.
pub static MIGRATIONS: Migrations = kit::migrations!();

/// The baseline's settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "sync-facade", version, about)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long = "http-addr", env = "HTTP_ADDR", default_value = "0.0.0.0:8084")]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub http: kit::http::HttpSettings,
    /// Base URL of the data platform; orders go to `<url>/v1/orders`.
    #[arg(
        long = "data-platform-url",
        env = "DATA_PLATFORM_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub data_platform_url: String,
    /// Longest the call to the data platform may take before the order fails.
    #[arg(
        long = "data-platform-timeout-ms",
        env = "DATA_PLATFORM_TIMEOUT_MS",
        default_value = "2s",
        value_parser = kit::duration::parse
    )]
    pub data_platform_timeout: Duration,
    #[command(flatten)]
    pub log: kit::telemetry::LogSettings,
}

/// Connects, migrates, binds and assembles the service.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let db = connect_and_migrate(SERVICE, &config.database, &[&MIGRATIONS])
        .await
        .context("setting up the database")?;
    let listener = App::bind(config.http_addr).await?;
    let platform = reqwest::Client::builder()
        .timeout(config.data_platform_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("creating the HTTP client")?;
    let observed = Observed::new(Metrics::new(), Health::new()).check(Answers::new(db.clone()));
    let state = http::State {
        db,
        platform,
        orders_url: format!(
            "{}/v1/orders",
            config.data_platform_url.trim_end_matches('/')
        ),
    };
    let api = http::router(state);
    Ok(App::new(SERVICE, listener, api, observed, &config.http))
}
