//! `shopctl bench`: an open-loop load against a running system, with the figures that tell
//! whether it keeps up.
//!
//! - [`load`]: products and coupons first, then orders on a fixed schedule.
//! - [`watch`]: the end of each saga, from `order.events`.
//! - [`procs`]: CPU time and peak memory of every process under test, from `/proc`.
//! - [`commits`]: database commits per order, when the services are on a Postgres server.
//! - [`scraped`]: what the services count themselves: Kafka requests, SQLite commits.
//!
//! A run measures `POST /orders` latency and saga latency (from an order's due time to its
//! terminal event; for a system that answers with a final status, such as the synchronous
//! baseline, the answer is the end), confirmed orders per second, CPU time per confirmed
//! order of each process, peak memory, the Kafka requests per confirmed order, and the
//! commits of each database per confirmed order (Postgres's own counts with `--postgres`, the
//! services' counts of their SQLite files otherwise). `--sweep` raises the rate until the system no
//! longer keeps up. The table goes to the terminal and everything to a JSON file.

pub mod commits;
pub mod load;
pub mod plot;
pub mod procs;
pub mod scraped;
pub mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::Cli;
use crate::stack::step;
use load::{Sent, Targets};

/// A run keeps up when its saga p99 stays under this, and every order ends.
pub const SUSTAINABLE_P99: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Orders per second, sent on schedule whatever the answers (an open loop).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long orders are measured, after the warm-up: seconds, or a duration such as `1m`.
    #[arg(long, default_value = "30", value_parser = seconds)]
    pub duration: Duration,
    /// How long orders are sent before measuring starts.
    #[arg(long, default_value = "5", value_parser = seconds)]
    pub warmup: Duration,
    /// Lines per order, each a different product.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub lines: u16,
    /// Share of orders that carry a coupon, from 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub coupon_share: f64,
    /// Products the orders are spread over.
    #[arg(long, default_value_t = 20)]
    pub products: u16,
    /// Where orders go (`POST /orders`); the order service by default. Point it, with
    /// `--product-url` and `--coupon-url`, at the synchronous baseline to compare.
    #[arg(long)]
    pub target: Option<String>,
    /// Raise the rate step by step (×1.5 from `--rate`) until the system no longer keeps up,
    /// and report the highest rate it sustained.
    #[arg(long)]
    pub sweep: bool,
    /// The highest rate a sweep tries.
    #[arg(long, default_value_t = 2_000.0)]
    pub max_rate: f64,
    /// How long to wait after the last order for the sagas still running.
    #[arg(long, default_value = "30", value_parser = seconds)]
    pub drain: Duration,
    /// The processes whose CPU is "our services" in the per-order figure (the JSON has every
    /// process anyway): the saga's four by default; `sync-facade` for the baseline.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "order-service,product-service,coupon-service,analytics-forwarder"
    )]
    pub services: Vec<String>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "bench.json")]
    pub json: PathBuf,
    /// The Postgres server the services keep their databases on (a role that may read
    /// `pg_stat_database`): the report then gives each database's commits per confirmed
    /// order, read 11 s after the drain, once Postgres has counted them all.
    #[arg(long, env = "BENCH_POSTGRES_URL")]
    pub postgres: Option<String>,
}

impl BenchArgs {
    pub(crate) fn lines(&self) -> usize {
        usize::from(self.lines)
    }
}

/// Seconds, or a duration with a unit (`90s`, `2m`).
fn seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err(format!("{text:?} is not a duration")),
        Err(_) => humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?}: {e}")),
    }
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{text:?} is not a share from 0 to 1")),
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1_000.0;
        Percentiles {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// The percentiles a latency distribution is drawn with: every whole one, then the tail.
const CDF_PERCENTILES: [f64; 4] = [99.5, 99.9, 99.99, 100.0];

/// A latency distribution as `[percentile, milliseconds]` points, for `shopctl plot`.
fn cdf(histogram: &Histogram<u64>) -> Vec<[f64; 2]> {
    if histogram.is_empty() {
        return Vec::new();
    }
    (0..100)
        .map(f64::from)
        .chain(CDF_PERCENTILES)
        .map(|p| {
            let us = histogram.value_at_quantile(p / 100.0);
            [p, us as f64 / 1_000.0]
        })
        .collect()
}

/// The figures of one run at one rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub target: String,
    pub rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub lines: u16,
    pub coupon_share: f64,
    /// Orders due in the measured part of the run.
    pub sent: usize,
    /// Of those, answered with an error status or not answered at all.
    pub failed: usize,
    /// The failed ones by their answer's status code, `no answer` for none.
    #[serde(default)]
    pub failures: BTreeMap<String, usize>,
    pub confirmed: usize,
    pub cancelled: usize,
    /// Accepted but not ended within the drain time.
    pub unfinished: usize,
    pub confirmed_per_s: f64,
    pub post_ms: Percentiles,
    pub saga_ms: Percentiles,
    /// The POST latency distribution, `[percentile, ms]`.
    #[serde(default)]
    pub post_cdf_ms: Vec<[f64; 2]>,
    /// The saga latency distribution, `[percentile, ms]`.
    #[serde(default)]
    pub saga_cdf_ms: Vec<[f64; 2]>,
    /// CPU milliseconds per confirmed order, per process name.
    pub cpu_ms_per_confirmed: BTreeMap<String, f64>,
    /// The same, summed over our services (not the broker, the database or the mock).
    pub services_cpu_ms_per_confirmed: f64,
    /// Peak resident memory per process name, in MiB (the largest process of the name).
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// Transactions committed per confirmed order, per database: with `--postgres` each
    /// database's by Postgres's count, over the measured orders; otherwise each service's
    /// SQLite file's, counted by the service, over the whole run, warm-up included.
    #[serde(default)]
    pub db_commits_per_confirmed: BTreeMap<String, f64>,
    /// Requests the services' Kafka clients sent per confirmed order, by kind (`Produce`,
    /// `Fetch`, `Other`), over the whole run, warm-up included.
    #[serde(default)]
    pub kafka_requests_per_confirmed: BTreeMap<String, f64>,
    /// Saga p99 under [`SUSTAINABLE_P99`], every order ended, none failed.
    pub sustainable: bool,
}

/// Everything a `shopctl bench` wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub runs: Vec<RunReport>,
    /// The highest rate of the runs that kept up.
    pub highest_sustainable_rate: Option<f64>,
}

/// `shopctl bench`: runs, prints the table, writes the JSON report.
pub async fn bench(cli: &Cli, args: &BenchArgs) -> anyhow::Result<()> {
    let report = run(cli, args).await?;
    print(&report);
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.json, json).with_context(|| format!("writing {}", args.json.display()))?;
    step(&format!("report written to {}", args.json.display()));
    Ok(())
}

/// One run, or a sweep of runs at rising rates.
pub async fn run(cli: &Cli, args: &BenchArgs) -> anyhow::Result<BenchReport> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        anyhow::bail!("--rate must be a positive number of orders per second");
    }
    let targets = Targets {
        orders: args.target.clone().unwrap_or_else(|| cli.order_url.clone()),
        products: cli.product_url.clone(),
        coupons: cli.coupon_url.clone(),
        admin_token: cli.admin_token().map(str::to_owned),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1_024)
        .build()?;
    let mut runs = Vec::new();
    let mut rate = args.rate;
    loop {
        let this = BenchArgs {
            rate,
            ..args.clone()
        };
        let report = run_once(cli, &this, &targets, &http).await?;
        let kept_up = report.sustainable;
        runs.push(report);
        rate *= 1.5;
        if !args.sweep || !kept_up || rate > args.max_rate {
            break;
        }
    }
    let highest_sustainable_rate = runs
        .iter()
        .filter(|r| r.sustainable)
        .map(|r| r.rate)
        .reduce(f64::max);
    Ok(BenchReport {
        runs,
        highest_sustainable_rate,
    })
}

async fn run_once(
    cli: &Cli,
    args: &BenchArgs,
    targets: &Targets,
    http: &reqwest::Client,
) -> anyhow::Result<RunReport> {
    step(&format!(
        "{:.0} orders/s for {:?} after {:?} of warm-up, against {}",
        args.rate, args.duration, args.warmup, targets.orders
    ));
    let seed = load::seed(http, args, targets).await?;
    let stop = CancellationToken::new();
    let _stop_watching = stop.clone().drop_guard();
    // The baseline ends its orders in the answer and publishes nothing, so a system without
    // a broker is measured from its answers alone.
    let ends = match watch::watch(&cli.brokers, stop.clone()).await {
        Ok(ends) => Some(ends),
        Err(error) if args.target.is_some() => {
            step(&format!(
                "not watching order.events ({error:#}): saga ends come from the answers"
            ));
            None
        }
        Err(error) => return Err(error),
    };
    // The baseline has no Kafka clients, and none of these services to ask.
    let services = [
        ("order-service", cli.order_url.as_str()),
        ("product-service", cli.product_url.as_str()),
        ("coupon-service", cli.coupon_url.as_str()),
        ("analytics-forwarder", cli.forwarder_url.as_str()),
    ];
    let scraped_before = match &ends {
        Some(_) => scraped::sample(http, &services)
            .await
            .inspect_err(|error| {
                step(&format!(
                    "not counting Kafka requests and SQLite commits: {error:#}"
                ))
            })
            .ok(),
        None => None,
    };
    let mut before = None;
    let mut commits_before = None;
    let sent = load::run(http, args, targets, &seed, || {
        before = Some(procs::sample());
        // Reading the commits takes a connection to the server: it runs beside the schedule.
        commits_before = args
            .postgres
            .clone()
            .map(|url| tokio::spawn(async move { commits::sample(&url).await }));
    })
    .await?;
    let before = before.unwrap_or_else(procs::sample);
    let measured: Vec<&Sent> = sent.iter().filter(|s| s.measured).collect();
    // Wait for the sagas still running, then take the CPU figures.
    let pending = |ends: &watch::Ends| {
        measured
            .iter()
            .filter(|s| s.order_status.as_deref() == Some("PENDING"))
            .filter(|s| s.order_id.as_ref().is_some_and(|id| ends.get(id).is_none()))
            .count()
    };
    if let Some(ends) = &ends {
        let bar = crate::progress::bar("sagas ended", measured.len() as u64);
        let _ = kit::poll::until(
            "every saga ended",
            args.drain,
            Duration::from_millis(100),
            || {
                let pending = pending(ends);
                bar.set_position((measured.len() - pending) as u64);
                std::future::ready((pending == 0).then_some(()))
            },
        )
        .await;
        bar.finish_and_clear();
    }
    let after = procs::sample();
    let mut report = report(args, targets, &measured, ends.as_ref(), &before, &after);
    let settle = match (&args.postgres, &scraped_before) {
        (Some(_), _) => commits::SETTLE.max(scraped::SETTLE),
        (None, Some(_)) => scraped::SETTLE,
        (None, None) => Duration::ZERO,
    };
    if !settle.is_zero() {
        step("waiting for the run's commits and requests to be counted");
        tokio::time::sleep(settle).await;
    }
    if let (Some(url), Some(commits_before)) = (&args.postgres, commits_before) {
        let commits_before = commits_before
            .await
            .context("reading the commits before the run")??;
        let commits_after = commits::sample(url).await?;
        report.db_commits_per_confirmed =
            commits::per_order(&commits_before, &commits_after, report.confirmed);
    }
    if let (Some(scraped_before), Some(ends)) = (scraped_before, &ends) {
        let scraped_after = scraped::sample(http, &services).await?;
        // Every order of the run, warm-up included, is inside the window.
        let confirmed = sent
            .iter()
            .filter_map(|s| ends.get(s.order_id.as_deref()?))
            .filter(|end| end.confirmed)
            .count();
        report.kafka_requests_per_confirmed =
            scraped::requests_per_order(&scraped_before, &scraped_after, confirmed);
        if args.postgres.is_none() {
            report.db_commits_per_confirmed =
                scraped::sqlite_commits_per_order(&scraped_before, &scraped_after, confirmed);
        }
    }
    Ok(report)
}

fn report(
    args: &BenchArgs,
    targets: &Targets,
    measured: &[&Sent],
    ends: Option<&watch::Ends>,
    before: &BTreeMap<&'static str, procs::Usage>,
    after: &BTreeMap<&'static str, procs::Usage>,
) -> RunReport {
    let histogram = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let (mut post, mut saga) = (histogram(), histogram());
    let (mut failed, mut confirmed, mut cancelled, mut unfinished) = (0, 0, 0, 0);
    let mut failures = BTreeMap::<String, usize>::new();
    for sent in measured {
        let Some(latency) = sent.post.filter(|_| (200..300).contains(&sent.status)) else {
            failed += 1;
            let status = match sent.status {
                0 => "no answer".to_owned(),
                status => status.to_string(),
            };
            *failures.entry(status).or_default() += 1;
            continue;
        };
        let latency_us = latency.as_micros().max(1) as u64;
        let _ = post.record(latency_us.min(post.high()));
        let end = match sent.order_status.as_deref() {
            Some("CONFIRMED") => Some((true, latency_us)),
            Some("CANCELLED") => Some((false, latency_us)),
            _ => sent
                .order_id
                .as_ref()
                .and_then(|id| ends?.get(id))
                .map(|end| {
                    (
                        end.confirmed,
                        (end.at_ms * 1_000 - sent.due_us).max(1) as u64,
                    )
                }),
        };
        match end {
            Some((ok, took_us)) => {
                let _ = saga.record(took_us.min(saga.high()));
                if ok {
                    confirmed += 1;
                } else {
                    cancelled += 1;
                }
            }
            None => unfinished += 1,
        }
    }
    let cpu = procs::cpu_between(before, after);
    let per_order = |spent: Duration| spent.as_secs_f64() * 1_000.0 / confirmed.max(1) as f64;
    let cpu_ms_per_confirmed: BTreeMap<String, f64> = cpu
        .iter()
        .map(|(name, spent)| ((*name).to_owned(), per_order(*spent)))
        .collect();
    let services_cpu_ms_per_confirmed = cpu
        .iter()
        .filter(|(name, _)| args.services.iter().any(|s| s == *name))
        .map(|(_, spent)| per_order(*spent))
        .sum();
    let peak_rss_mib = after
        .iter()
        .map(|(name, usage)| ((*name).to_owned(), usage.peak_rss as f64 / 1_048_576.0))
        .collect();
    let saga_ms = Percentiles::of(&saga);
    RunReport {
        target: targets.orders.clone(),
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        lines: args.lines,
        coupon_share: args.coupon_share,
        sent: measured.len(),
        failed,
        failures,
        confirmed,
        cancelled,
        unfinished,
        confirmed_per_s: confirmed as f64 / args.duration.as_secs_f64().max(f64::EPSILON),
        post_ms: Percentiles::of(&post),
        post_cdf_ms: cdf(&post),
        saga_cdf_ms: cdf(&saga),
        sustainable: failed == 0
            && unfinished == 0
            && saga_ms.count > 0
            && saga_ms.p99 < SUSTAINABLE_P99.as_secs_f64() * 1_000.0,
        saga_ms,
        cpu_ms_per_confirmed,
        services_cpu_ms_per_confirmed,
        peak_rss_mib,
        db_commits_per_confirmed: BTreeMap::new(),
        kafka_requests_per_confirmed: BTreeMap::new(),
    }
}

/// The table a person reads.
pub fn print(report: &BenchReport) {
    println!(
        "{:>7} {:>6} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>5}",
        "rate",
        "sent",
        "conf",
        "canc",
        "lost",
        "conf/s",
        "POST p50",
        "POST p99",
        "saga p50",
        "saga p99",
        "cpu ms/ord",
        "ok"
    );
    for run in &report.runs {
        println!(
            "{:>7.0} {:>6} {:>6} {:>6} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.2} {:>5}",
            run.rate,
            run.sent,
            run.confirmed,
            run.cancelled,
            run.failed + run.unfinished,
            run.confirmed_per_s,
            run.post_ms.p50,
            run.post_ms.p99,
            run.saga_ms.p50,
            run.saga_ms.p99,
            run.services_cpu_ms_per_confirmed,
            if run.sustainable { "yes" } else { "no" },
        );
    }
    for run in report.runs.iter().filter(|run| !run.failures.is_empty()) {
        let failures: Vec<String> = run
            .failures
            .iter()
            .map(|(status, count)| format!("{count} × {status}"))
            .collect();
        println!(
            "failed orders at {:.0}/s, by answer: {}",
            run.rate,
            failures.join(", ")
        );
    }
    if let Some(last) = report.runs.last() {
        println!("CPU ms per confirmed order and peak RSS (MiB), last run:");
        for (name, ms) in &last.cpu_ms_per_confirmed {
            let rss = last.peak_rss_mib.get(name).copied().unwrap_or_default();
            println!("    {name:<20} {ms:>8.2} ms {rss:>8.1} MiB");
        }
        if !last.kafka_requests_per_confirmed.is_empty() {
            println!("Kafka requests per confirmed order (every service's clients), last run:");
            for (request, count) in &last.kafka_requests_per_confirmed {
                println!("    {request:<32} {count:>8.2}");
            }
        }
        if !last.db_commits_per_confirmed.is_empty() {
            println!("database commits per confirmed order, last run:");
            for (database, commits) in &last.db_commits_per_confirmed {
                println!("    {database:<32} {commits:>8.2}");
            }
        }
    }
    match report.highest_sustainable_rate {
        Some(rate) => println!("highest sustainable rate: {rate:.0} orders/s"),
        None => println!("no run kept up (saga p99 under 1 s, every order ended)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_unless_they_say_otherwise() {
        assert_eq!(seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("2m"), Ok(Duration::from_secs(120)));
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").is_err());
    }

    #[test]
    fn a_coupon_share_is_between_zero_and_one() {
        assert_eq!(share("0.25"), Ok(0.25));
        assert!(share("1.5").is_err());
        assert!(share("x").is_err());
    }
}
