//! `analytics-forwarder`: see the crate documentation and the README for its settings.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    eventing::telemetry::init();
    let config = analytics_forwarder::Config::parse();
    let shutdown = eventing::telemetry::shutdown_on_signal();
    analytics_forwarder::build(config)
        .await?
        .run(shutdown)
        .await
}
