//! `shopctl`: see the crate documentation and `shopctl --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shopctl::run(shopctl::Cli::parse()).await
}
