//! The order service: places orders and runs each one's saga to CONFIRMED or CANCELLED.
//!
//! - [`http`]: `POST /orders`, `GET /orders/{id}`, `POST /orders/{id}/cancel`,
//!   `GET /catalog/{product_id}`.
//! - [`handlers`]: `stock.events` and `coupon.events` move orders on; `product.catalog` feeds
//!   the catalog replica that prices orders.
//! - [`saga`]: confirming and cancelling, shared by handlers, API and deadline.
//! - [`deadline`]: cancels orders still PENDING after the saga timeout.
//! - [`domain`]: the state machine and request rules, without I/O.
//! - [`store`]: every SQL statement of the service.

pub mod deadline;
pub mod domain;
pub mod error_code;
pub mod handlers;
pub mod http;
pub mod saga;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use eventing::{CommonSettings, Runtime};
use kit::App;
use kit::db::Migrations;

/// The service's name: consumer group, envelope `producer`, log field.
/// This service of the contract.
pub const ME: contract::Service = contract::Service::OrderService;
pub const SERVICE: &str = ME.name();

/// This service's migrations, per backend.
pub static MIGRATIONS: Migrations = kit::migrations!();

/// Settings of the order service, from flags or environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = SERVICE, about = "Orders of the saga: places them and sees each one to its end")]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long = "http-addr", env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// How long an order may stay PENDING before it is cancelled with reason TIMEOUT.
    #[arg(
        long = "saga-timeout-ms",
        env = "SAGA_TIMEOUT_MS",
        default_value = "30s",
        value_parser = kit::duration::parse
    )]
    pub saga_timeout: Duration,
    /// How often PENDING orders are checked against their deadline.
    #[arg(
        long = "deadline-check-interval-ms",
        env = "DEADLINE_CHECK_INTERVAL_MS",
        default_value = "1s",
        value_parser = kit::duration::parse
    )]
    pub deadline_check_interval: Duration,
    #[command(flatten)]
    pub common: CommonSettings,
}

/// Connects, migrates, binds, and assembles the service: HTTP API, outbox relay, the consumer
/// of stock, coupon and catalog events, and the deadline sweeper.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let runtime = Runtime::connect(SERVICE, config.common, &MIGRATIONS).await?;
    let metrics = saga::SagaMetrics::register(&runtime.metrics);
    let listener = App::bind(config.http_addr).await?;
    let handler = handlers::OrderServiceEvents {
        metrics: metrics.clone(),
    };
    let saga_timeout = config.saga_timeout;
    let interval = config.deadline_check_interval;
    let api = http::router(http::State {
        db: runtime.http_db.clone(),
        outbox: runtime.outbox.clone(),
        metrics: metrics.clone(),
        saga_timeout,
    });
    let (db, outbox) = (runtime.db.clone(), runtime.outbox.clone());
    Ok(runtime
        .app(listener, api, ME.consumes(), handler, ME.into())
        .worker("deadline", move |shutdown| {
            deadline::run(db, outbox, metrics, saga_timeout, interval, shutdown)
        }))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_settings_are_well_formed() {
        super::Config::command().debug_assert();
    }
}
