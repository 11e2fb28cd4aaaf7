//! `sync-facade`: see the crate documentation and docs/settings.md for its settings.

use clap::Parser;

#[tokio::main]
async fn main() {
    let config = sync_facade::Config::parse();
    kit::telemetry::init(sync_facade::SERVICE, &config.log);
    let shutdown = kit::telemetry::shutdown_on_signal();
    let result = async { sync_facade::build(config).await?.run(shutdown).await }.await;
    kit::app::exit(result)
}
