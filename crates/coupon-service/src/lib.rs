//! The coupon service: single-use coupons, applied to orders and restored on cancellation.
//!
//! - [`http`]: `POST /coupons`, `GET /coupons/{id}`.
//! - [`handlers::order_events`]: applies the coupon of `OrderCreated` (or refuses it) and
//!   restores it for `OrderCancelled`.
//! - [`domain`]: coupon kinds and the discount rule, without I/O.
//! - [`reconcile`]: a sweep that frees coupons held by no applied use.
//! - [`store`]: every SQL statement of the service.

pub mod domain;
pub mod error_code;
pub mod handlers;
pub mod http;
pub mod reconcile;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use eventing::{CommonSettings, Runtime};
use kit::App;
use kit::db::Migrations;

/// The service's name: consumer group, envelope `producer`, log field.
/// This service of the contract.
pub const ME: contract::Service = contract::Service::CouponService;
pub const SERVICE: &str = ME.name();

/// This service's migrations, per backend.
pub static MIGRATIONS: Migrations = kit::migrations!();

/// Settings of the coupon service, from flags or environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = SERVICE, about = "Coupons of the order saga")]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long = "http-addr", env = "HTTP_ADDR", default_value = "0.0.0.0:8082")]
    pub http_addr: SocketAddr,
    /// How often coupons are checked against their uses.
    #[arg(
        long = "reconcile-interval-ms",
        env = "RECONCILE_INTERVAL_MS",
        default_value = "1m",
        value_parser = kit::duration::parse
    )]
    pub reconcile_interval: Duration,
    #[command(flatten)]
    pub common: CommonSettings,
}

/// Connects, migrates, binds, and assembles the service: HTTP API, outbox relay, and the
/// consumer of `order.events`.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let runtime = Runtime::connect(SERVICE, config.common, &MIGRATIONS).await?;
    let listener = App::bind(config.http_addr).await?;
    let db = runtime.db.clone();
    let repairs = runtime.runtime_metrics.repairs_of(reconcile::KIND);
    let interval = config.reconcile_interval;
    let api = http::router(http::State {
        db: runtime.http_db.clone(),
        admin: runtime.admin.clone(),
    });
    let handler = handlers::order_events::OrderEvents;
    Ok(runtime
        .app(listener, api, ME.consumes(), handler, ME.into())
        .worker("reconciliation", move |shutdown| {
            reconcile::run(db, repairs, interval, shutdown)
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
