//! `shopctl up`: the whole system on one machine, with nothing to install but Rust.
//!
//! It builds the binaries (when run from the workspace), installs Tansu if it is missing,
//! and runs the [`Stack`]: Tansu with its data in a SQLite file under the data folder, the
//! topics, every service on its own SQLite file, and the data-platform mock (`--broker kafka`:
//! Apache Kafka instead of Tansu, installed by `scripts/install-kafka.sh`). It prints where
//! each listens and runs until Ctrl-C (or SIGTERM), restarting whatever exits or fails
//! ([`crate::supervise`]), then stops the services first, so that they commit their offsets,
//! and the broker last. Run again on the same folder, it finds the
//! orders, stock and offsets where they were.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::api::{Call, call};
use crate::stack::{BrokerKind, BrokerStorage, Service, Stack, StackConfig, step};

/// Options of `shopctl up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Folder for the broker's data, the services' databases and every log.
    #[arg(long, default_value = ".local")]
    pub data_dir: PathBuf,
    /// Port of the broker (with `--broker kafka`, its controller takes the next one).
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,
    /// Which broker runs: `tansu` (the local broker, `saga-broker`) or `kafka` (Apache Kafka
    /// of the version compose deploys, installed by `scripts/install-kafka.sh`; Java 17).
    #[arg(long, value_enum, default_value_t = BrokerKind::Tansu)]
    pub broker: BrokerKind,
    /// Port of the order service; product, coupon and forwarder take the next three, the
    /// data-platform mock this plus 10.
    #[arg(long, default_value_t = 8080)]
    pub http_port_base: u16,
    /// Create a few demo products and coupons when the product database is empty.
    #[arg(long)]
    pub seed_demo: bool,
    /// Do not run `cargo build` first; use the binaries beside `shopctl` as they are.
    #[arg(long)]
    pub no_build: bool,
    /// Where Tansu keeps its data: `sqlite` (a file in the data folder, kept across
    /// restarts) or `memory` (faster, lost when it stops). Kafka keeps its data on disk.
    #[arg(long, value_enum, default_value_t = BrokerStorage::Sqlite)]
    pub broker_storage: BrokerStorage,
    /// Put the services' databases on this Postgres server instead of SQLite files: a URL
    /// of a role that may create databases, such as `postgres://shop:shop@127.0.0.1/postgres`.
    /// Each service gets `<prefix>_<service>`, created when missing.
    #[arg(long, env = "SHOPCTL_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// The prefix of the databases `--postgres` creates.
    #[arg(long, default_value = "shop")]
    pub postgres_prefix: String,
}

impl UpArgs {
    fn url(&self, service: Service) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.http_port_base + service.port_offset()
        )
    }
}

/// Runs the system until Ctrl-C or SIGTERM.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let database_urls = match &args.postgres {
        Some(admin) => crate::stack::postgres_databases(admin, &args.postgres_prefix).await?,
        None => Vec::new(),
    };
    let mut stack = Stack::start(StackConfig {
        data_dir: args.data_dir.clone(),
        broker_port: args.broker_port,
        http_port_base: args.http_port_base,
        build: !args.no_build,
        bin_dir: None,
        broker: args.broker,
        broker_storage: args.broker_storage,
        database_urls,
        env: Vec::new(),
    })
    .await?;
    if args.seed_demo {
        seed_demo(&|service| args.url(service), stack.admin_token()).await?;
    }
    print_summary(&args, stack.data_dir());

    crate::supervise::supervise(&mut stack, wait_for_signal()).await;
    step("stopping: services first, then the broker");
    stack.stop(Duration::from_secs(15)).await;
    step("stopped");
    Ok(())
}

/// Demo products and coupons, created only when there is no product yet: products 1 Mug, 2 Tea
/// and 3 Lamp, coupons 1 and 2 for user 1 and 3 for user 2. `url` says where each service is;
/// creating products and coupons is an operator's act, so `admin_token` goes with each.
pub async fn seed_demo(url: &dyn Fn(Service) -> String, admin_token: &str) -> anyhow::Result<()> {
    let products = url(Service::ProductService);
    let exists = reqwest::get(format!("{products}/products/1"))
        .await?
        .status()
        .is_success();
    if exists {
        step("demo data: already there");
        return Ok(());
    }
    step("creating demo products and coupons");
    for (name, price, stock) in [("Mug", 1500, 100), ("Tea", 999, 50), ("Lamp", 4000, 5)] {
        let body = json!({ "name": name, "price": price, "stock": stock });
        let url = format!("{products}/products");
        let product = post(
            contract::Service::ProductService.name(),
            url,
            body,
            admin_token,
        )
        .await?;
        println!(
            "    product {} {name}: price {price}, stock {stock}",
            product["product_id"]
        );
    }
    for (user, kind, value) in [(1, "PERCENT", 10), (1, "FIXED", 500), (2, "PERCENT", 50)] {
        let body = json!({ "user_id": user, "kind": kind, "value": value });
        let coupons = format!("{}/coupons", url(Service::CouponService));
        let coupon = post(
            contract::Service::CouponService.name(),
            coupons,
            body,
            admin_token,
        )
        .await?;
        println!(
            "    coupon {} for user {user}: {kind} {value}",
            coupon["coupon_id"]
        );
    }
    // Orders are priced from the order service's catalog replica: wait until it has them.
    for id in 1..=3 {
        crate::api::wait_for_catalog(&url(Service::OrderService), id).await?;
    }
    Ok(())
}

async fn post(
    service: &str,
    url: String,
    body: serde_json::Value,
    admin_token: &str,
) -> anyhow::Result<serde_json::Value> {
    let call_it = Call::new(service, reqwest::Method::POST, url, Some(body));
    call(call_it.admin(Some(admin_token))).await
}

fn print_summary(args: &UpArgs, data: &Path) {
    println!(
        "==> the system is up (Ctrl-C stops it; logs in {})",
        data.join("logs").display()
    );
    println!("    {:<20} 127.0.0.1:{}", "broker", args.broker_port);
    // The order service first, as a person reads it; the mock, which starts first, last.
    for service in Service::ALL[1..].iter().chain(&Service::ALL[..1]) {
        println!("    {:<20} {}", service.name(), args.url(*service));
    }
    // The token itself is not printed: terminals are recorded and shared.
    let token = data.join("admin-token");
    if std::env::var_os("ADMIN_TOKEN").is_some() {
        println!("    admin token          the ADMIN_TOKEN of this environment");
    } else {
        println!(
            "    admin token          in {0} (shopctl reads it; for curl: export ADMIN_TOKEN=$(cat {0}))",
            token.display()
        );
    }
    let _ = std::io::stdout().flush();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
