//! `order-service`: see the crate documentation and docs/settings.md for its settings.

use clap::Parser;

#[tokio::main]
async fn main() {
    let config = order_service::Config::parse();
    kit::telemetry::init(order_service::SERVICE, &config.common.log);
    let shutdown = kit::telemetry::shutdown_on_signal();
    let result = match order_service::build(config).await {
        Ok(app) => app.run(shutdown).await,
        Err(error) => Err(error),
    };
    // Status 1 when it broke, so that a supervisor starts it again.
    kit::app::exit(result)
}
