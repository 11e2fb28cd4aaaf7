//! The analytics forwarder: delivers every order event to the external data platform.
//!
//! The seed's rule is that this side logic never touches an order: it consumes `order.events`
//! like any other service, records each event as a [`store`] delivery row in the same
//! transaction that marks the event consumed, and a separate [`deliver`] worker sends the rows
//! over HTTP with the event id as `Idempotency-Key`, retrying with backoff and honouring 429
//! and `Retry-After`. A slow or dead data platform delays deliveries, never orders.
//!
//! - [`handler`]: `order.events` → delivery rows.
//! - [`deliver`]: the delivery worker, with its [`breaker`] and dead letters.
//! - [`http`]: health, metrics, and `POST /deliveries/retry`.
//! - [`store`]: every SQL statement of the service.

pub mod breaker;
pub mod deliver;
pub mod handler;
pub mod http;
pub mod store;

use std::net::SocketAddr;
use std::time::Duration;

use eventing::{Assemble, CommonSettings, Runtime};
use kit::App;
use kit::db::Migrations;

/// The service's name: consumer group, log field.
/// This service of the contract.
pub const ME: contract::Service = contract::Service::AnalyticsForwarder;
pub const SERVICE: &str = ME.name();

/// This service's migrations, per backend.
pub static MIGRATIONS: Migrations = kit::migrations!();

/// Settings of the forwarder, from flags or environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = SERVICE, about = "Forwards order events to the data platform")]
pub struct Config {
    /// Address the HTTP API (health and metrics) listens on.
    #[arg(long = "http-addr", env = "HTTP_ADDR", default_value = "0.0.0.0:8083")]
    pub http_addr: SocketAddr,
    /// How long the consumer rests after taking what a fetch brought, so that the next
    /// fetch brings every event of that time: one fetch and, per partition, one transaction
    /// per burst instead of one each per event. Forwarding is off the order path, so no order
    /// waits for it. Zero: no rests.
    #[arg(
        long = "consumer-rest-ms",
        env = "CONSUMER_REST_MS",
        default_value = CONSUMER_REST,
        value_parser = consumer_rest
    )]
    pub consumer_rest: Duration,
    #[command(flatten)]
    pub delivery: deliver::DeliverySettings,
    #[command(flatten)]
    pub common: CommonSettings,
}

/// [`Config::consumer_rest`] by default.
const CONSUMER_REST: &str = "100ms";

impl Config {
    /// Settings listening on `http_addr`, the consumer resting as by default.
    pub fn new(
        http_addr: SocketAddr,
        delivery: deliver::DeliverySettings,
        common: CommonSettings,
    ) -> Self {
        Config {
            http_addr,
            consumer_rest: consumer_rest(CONSUMER_REST).expect("the default rest parses"),
            delivery,
            common,
        }
    }
}

/// Connects, migrates, binds, and assembles the service: health and metrics, the consumer of
/// `order.events`, and the delivery worker.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let runtime = Runtime::connect(SERVICE, config.common, &MIGRATIONS).await?;
    let listener = App::bind(config.http_addr).await?;
    let api = http::router(
        runtime.http_db.clone(),
        runtime.outbox.clone(),
        runtime.admin.clone(),
    );
    // The forwarder publishes nothing, so it runs no outbox relay; the consumer's wake-up
    // after each commit tells the delivery worker instead that rows are waiting.
    let worker = deliver::Worker::new(
        runtime.db.clone(),
        runtime.outbox.clone(),
        &runtime.metrics,
        config.delivery,
        eventing::dlq::DeadLetters::new(runtime.producer.clone(), runtime.db.clone(), SERVICE),
    )?;
    let consumer = runtime
        .consumer(ME.consumes(), handler::OrderEvents)
        .resting(config.consumer_rest);
    Ok(runtime
        .bare_app(listener, api)
        .with_housekeeping(&runtime)
        .with_consumer(consumer)
        .worker("delivery", move |shutdown| worker.run(shutdown)))
}

/// The longest rest [`Config::consumer_rest`] takes: far below the consumer watchdog's
/// bound, which a partition resting with messages waiting must never look stalled to.
const LONGEST_REST: Duration = Duration::from_secs(5);

fn consumer_rest(value: &str) -> Result<Duration, String> {
    let rest = kit::duration::parse(value)?;
    if rest > LONGEST_REST {
        return Err(format!(
            "at most {LONGEST_REST:?}, so that a resting consumer never looks stalled"
        ));
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_settings_are_well_formed() {
        super::Config::command().debug_assert();
    }
}
