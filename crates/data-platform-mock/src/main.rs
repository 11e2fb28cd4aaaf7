//! `data-platform-mock`: see the crate documentation and docs/settings.md for its settings.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = data_platform_mock::Config::parse();
    kit::telemetry::init("data-platform-mock", &config.log);
    let shutdown = kit::telemetry::shutdown_on_signal();
    data_platform_mock::build(config).await?.run(shutdown).await
}
