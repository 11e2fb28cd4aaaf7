//! `order-service`: see the crate documentation and the README for its settings.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    eventing::telemetry::init();
    let config = order_service::Config::parse();
    let shutdown = eventing::telemetry::shutdown_on_signal();
    order_service::build(config).await?.run(shutdown).await
}
