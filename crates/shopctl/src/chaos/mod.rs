//! `shopctl chaos`: a bounded load of orders against a local [`Stack`] while faults are
//! injected, then a check of the invariants the saga promises, and of liveness.
//!
//! - [`load`]: seeding, the orders and their pace, settling.
//! - [`faults`]: the [`faults::Fault`]s and their injection.
//! - [`invariants`]: what must hold once the system has settled.
//! - [`client`]: the run's HTTP client.
//!
//! The load: random products (some run out), quantities, coupons (some another user's, some
//! already used), and user cancellations, each order placed with an `Idempotency-Key` and
//! retried until some service answers, as a storefront would. The faults, in turn, spread over
//! the load: SIGKILL and restart of each service, a broker restart (its storage survives), a
//! database restart (with Postgres and a restart command), duplicate re-publication of
//! already handled events; all along, the data platform fails half of its requests and adds
//! latency. When the load ends and the last fault is over, a few new orders must each confirm
//! within [`LIVENESS_WITHIN`]; then the data platform recovers, the system settles, and the
//! [`invariants`] are checked, along with the share of orders that timed out.

pub mod client;
pub mod faults;
pub mod invariants;
pub mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::client::Client;
use self::faults::FAULTS;
use crate::stack::{BrokerStorage, Stack, StackConfig, step};

/// Options of `shopctl chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Orders to place.
    #[arg(long, default_value_t = 2000)]
    pub orders: usize,
    /// Orders in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Most orders placed per second, so that the faults land while orders are flowing.
    #[arg(long, default_value_t = 50.0)]
    pub orders_per_second: f64,
    /// Products to create; their stock is sized so that most orders can be served and some
    /// products run out.
    #[arg(long, default_value_t = 20)]
    pub products: usize,
    /// Coupons to create, for users 1 to 50.
    #[arg(long, default_value_t = 60)]
    pub coupons: usize,
    /// Folder for the stack's data and logs; a fresh temporary one when absent.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 19092)]
    pub broker_port: u16,
    #[arg(long, default_value_t = 18080)]
    pub http_port_base: u16,
    /// A Postgres server (URL of a database there, as a role that may create databases) on
    /// which each service gets a fresh database; SQLite files when absent.
    #[arg(long, env = "CHAOS_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// A shell command that restarts the database server, for the database fault (for
    /// example `pg_ctlcluster 15 main restart`). Without it that fault is skipped.
    #[arg(long, env = "CHAOS_DB_RESTART_COMMAND")]
    pub db_restart_command: Option<String>,
    /// Longest the system may take to settle after the load, in seconds.
    #[arg(long, default_value_t = 180)]
    pub settle_timeout_s: u64,
    /// Do not run `cargo build` first.
    #[arg(long)]
    pub no_build: bool,
    /// Where the service binaries are; beside `shopctl` when absent.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Most orders that may end cancelled with TIMEOUT, in percent; more is a violation.
    #[arg(long, default_value_t = 5.0)]
    pub max_timeout_percent: f64,
}

/// How long an order placed after the last fault may take to confirm.
pub const LIVENESS_WITHIN: Duration = Duration::from_secs(30);
/// Orders placed after the last fault, each of which must confirm within [`LIVENESS_WITHIN`].
pub(super) const LIVENESS_ORDERS: usize = 5;

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub orders: usize,
    pub confirmed: usize,
    /// How long each order placed after the last fault took to confirm; `None` for one that
    /// did not within [`LIVENESS_WITHIN`].
    pub after_faults: Vec<Option<Duration>>,
    pub cancelled: BTreeMap<String, usize>,
    pub faults: Vec<(String, String)>,
    pub violations: Vec<String>,
    pub settle: Duration,
    pub load: Duration,
}

impl Report {
    /// The share of orders cancelled because their saga deadline passed.
    pub fn timeout_share(&self) -> f64 {
        let timeouts = self.cancelled.get("TIMEOUT").copied().unwrap_or_default();
        timeouts as f64 / self.orders.max(1) as f64
    }

    /// The summary table.
    pub fn print(&self) {
        println!();
        println!("| chaos run | |");
        println!("|---|---|");
        println!("| orders placed | {} |", self.orders);
        println!("| confirmed | {} |", self.confirmed);
        for (reason, n) in &self.cancelled {
            println!("| cancelled {reason} | {n} |");
        }
        println!("| TIMEOUT share | {:.1} % |", self.timeout_share() * 100.0);
        let confirmed_after: Vec<Duration> = self.after_faults.iter().flatten().copied().collect();
        println!(
            "| orders after the faults confirmed within {} s | {} of {} (slowest {:.1} s) |",
            LIVENESS_WITHIN.as_secs(),
            confirmed_after.len(),
            self.after_faults.len(),
            confirmed_after
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
        );
        let injected = self
            .faults
            .iter()
            .filter(|(_, r)| r.starts_with("done"))
            .count();
        println!("| faults injected | {injected} |");
        for (fault, result) in &self.faults {
            println!("| fault: {fault} | {result} |");
        }
        println!("| load time | {:.1} s |", self.load.as_secs_f64());
        println!(
            "| time for the last order to settle | {:.1} s |",
            self.settle.as_secs_f64()
        );
        println!("| invariant violations | {} |", self.violations.len());
        for violation in &self.violations {
            println!("| violation | {violation} |");
        }
    }
}

/// Runs the chaos suite; fails when an invariant is violated.
pub async fn chaos(args: ChaosArgs) -> anyhow::Result<()> {
    // On Ctrl-C or SIGTERM the run is dropped, and with it the stack, which stops every
    // process it started.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        report = run(args) => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    };
    report.print();
    if !report.violations.is_empty() {
        bail!("{} invariant violation(s)", report.violations.len());
    }
    Ok(())
}

/// Runs the chaos suite and returns what it found.
pub async fn run(args: ChaosArgs) -> anyhow::Result<Report> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("shopctl-chaos-{}", uuid::Uuid::new_v4()))
    });
    let database_urls = match &args.postgres {
        Some(admin) => {
            let run = uuid::Uuid::new_v4().simple().to_string();
            crate::stack::postgres_databases(admin, &format!("chaos_{run}")).await?
        }
        None => Vec::new(),
    };
    let env = [
        ("SAGA_TIMEOUT_MS", "20000"),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ("DELIVERY_MAX_BACKOFF_MS", "2000"),
        ("BREAKER_COOLDOWN_MS", "1000"),
        ("RUST_LOG", "warn"),
    ];
    let stack = Stack::start(StackConfig {
        data_dir,
        broker_port: args.broker_port,
        http_port_base: args.http_port_base,
        build: !args.no_build,
        bin_dir: args.bin_dir.clone(),
        broker: Default::default(),
        broker_storage: BrokerStorage::Sqlite,
        database_urls,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
    .await?;
    let client = Client::new(&stack);
    let (products, coupons) = load::seed(&client, &args).await?;
    let probe = load::seed_probe_product(&client).await?;
    client
        .put(
            &client.platform,
            "/v1/settings",
            json!({ "failure_rate": 0.5, "latency_ms": 20 }),
        )
        .await?;

    step(&format!(
        "placing {} orders while injecting faults",
        args.orders
    ));
    let started = Instant::now();
    let progress = Arc::new(AtomicUsize::new(0));
    let injected = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let brokers = stack.brokers();
    let injector = tokio::spawn(faults::inject_faults(
        stack,
        args.clone(),
        progress.clone(),
        injected.clone(),
        stop.clone(),
    ));
    let outcome = async {
        let sending = {
            let injected = injected.clone();
            crate::progress::Following::new(
                "orders sent",
                args.orders as u64,
                progress.clone(),
                move || format!("{} faults injected", injected.load(Ordering::SeqCst)),
            )
        };
        let placed = load::place_orders(&client, &args, &products, &coupons, progress).await?;
        drop(sending);
        let load = started.elapsed();
        step("waiting for the last fault to be over");
        // Past two minutes the run goes on: the report counts the faults injected.
        let _ = kit::poll::until(
            "every fault injected",
            Duration::from_secs(120),
            Duration::from_millis(100),
            || std::future::ready((injected.load(Ordering::SeqCst) >= FAULTS.len()).then_some(())),
        )
        .await;
        step(&format!(
            "the faults are over: {LIVENESS_ORDERS} new orders must confirm within {} s",
            LIVENESS_WITHIN.as_secs()
        ));
        let (probe_orders, after_faults) = load::orders_after_faults(&client, probe).await?;
        // They count in the invariants like every other order.
        let mut placed = placed;
        placed.extend(probe_orders);
        let mut products = products.clone();
        products.push(probe);
        step("the data platform recovers; waiting for the system to settle");
        client
            .put(
                &client.platform,
                "/v1/settings",
                json!({ "failure_rate": 0.0, "latency_ms": 0 }),
            )
            .await?;
        let settle_started = Instant::now();
        let orders =
            load::settle(&client, &placed, Duration::from_secs(args.settle_timeout_s)).await?;
        let settle = settle_started.elapsed();
        let mut report = invariants::check(&client, &brokers, &orders, &products, &coupons).await?;
        report.load = load;
        report.settle = settle;
        for (n, took) in after_faults.iter().enumerate() {
            if took.is_none() {
                report.violations.push(format!(
                    "order {n} placed after the faults did not confirm within {} s",
                    LIVENESS_WITHIN.as_secs()
                ));
            }
        }
        report.after_faults = after_faults;
        if report.timeout_share() * 100.0 > args.max_timeout_percent {
            report.violations.push(format!(
                "{:.1} % of orders timed out (at most {} % allowed)",
                report.timeout_share() * 100.0,
                args.max_timeout_percent
            ));
        }
        anyhow::Ok(report)
    }
    .await;
    stop.cancel();
    let (mut stack, injected_faults) = injector.await.context("the fault injector panicked")?;
    stack.stop(Duration::from_secs(15)).await;
    let mut report = outcome?;
    report.faults = injected_faults;
    Ok(report)
}
