//! `shopctl bench` against the local stack as `shopctl up` runs it: a short run completes and
//! reports every figure. How fast the system is belongs to BENCHMARKS.md, not to a test.

use std::path::Path;
use std::process::Command;

use local::start_stack;
use serde_json::Value;
use shopctl::bench::commits::{self, SETTLE};
use shopctl::stack::Service;

mod local;

#[tokio::test(flavor = "multi_thread")]
async fn a_short_bench_completes_and_reports_every_figure() {
    let shopctl = Path::new(env!("CARGO_BIN_EXE_shopctl"));
    let stack = start_stack("bench").await;
    let data_dir = stack.data_dir().to_path_buf();
    let json = data_dir.join("bench.json");

    let run = tokio::task::spawn_blocking({
        let (shopctl, json) = (shopctl.to_path_buf(), json.clone());
        let env = [
            ("KAFKA_BROKERS", stack.brokers()),
            ("ORDER_SERVICE_URL", stack.url(Service::OrderService)),
            ("PRODUCT_SERVICE_URL", stack.url(Service::ProductService)),
            ("COUPON_SERVICE_URL", stack.url(Service::CouponService)),
            // Creating the bench's products and coupons is an operator's act.
            ("ADMIN_TOKEN", stack.admin_token().to_owned()),
        ];
        move || {
            Command::new(shopctl)
                .args(["bench", "--duration", "5", "--rate", "20", "--warmup", "1"])
                .args(["--coupon-share", "0.2", "--json"])
                .arg(&json)
                .envs(env)
                .output()
                .expect("shopctl runs")
        }
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "shopctl bench failed: {printed}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(printed.contains("saga p99"), "{printed}");

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{report:#}");
    let run = &runs[0];
    assert_eq!(run["rate"], 20.0);
    assert!(run["sent"].as_u64().unwrap() > 0, "{run:#}");
    assert!(run["confirmed"].as_u64().unwrap() > 0, "{run:#}");
    assert!(run["confirmed_per_s"].as_f64().unwrap() > 0.0, "{run:#}");
    for latency in ["post_ms", "saga_ms"] {
        for figure in ["count", "p50", "p90", "p99", "max"] {
            assert!(
                run[latency][figure].as_f64().is_some_and(|v| v > 0.0),
                "{latency}.{figure}: {run:#}"
            );
        }
    }
    for process in [
        "order-service",
        "product-service",
        "coupon-service",
        "analytics-forwarder",
        "broker",
    ] {
        assert!(
            run["cpu_ms_per_confirmed"][process].as_f64().is_some(),
            "no CPU figure for {process}: {run:#}"
        );
        assert!(
            run["peak_rss_mib"][process]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "no memory figure for {process}: {run:#}"
        );
    }
    assert!(run["services_cpu_ms_per_confirmed"].as_f64().unwrap() > 0.0);
    assert!(run["sustainable"].is_boolean());
    let cdf = run["saga_cdf_ms"]
        .as_array()
        .expect("the saga latency distribution");
    assert_eq!(
        cdf.len(),
        104,
        "every whole percentile and the tail: {run:#}"
    );

    // The report draws: both plots are SVG documents with the series in them.
    let plots = data_dir.join("plots");
    let drawn = Command::new(shopctl)
        .arg("plot")
        .arg(&json)
        .arg("--out")
        .arg(&plots)
        .output()
        .expect("shopctl plot");
    assert!(drawn.status.success(), "{drawn:?}");
    for name in ["latency-vs-rate.svg", "latency-cdf.svg"] {
        let svg = std::fs::read_to_string(plots.join(name)).expect(name);
        assert!(svg.starts_with("<svg"), "{name}");
        assert!(
            svg.contains("bench"),
            "{name} names its series after the report"
        );
    }
    drop(stack);
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn the_commits_a_database_makes_between_two_samples_are_counted_per_order() {
    if testkit::sqlite_backend() {
        return; // The count is Postgres's own (pg_stat_database); SQLite has none to read.
    }
    let server = testkit::admin_database_url();
    let database = testkit::fresh_database("commits")
        .await
        .expect("a database");
    let name = database.rsplit('/').next().expect("a name").to_owned();
    let before = commits::sample(&server).await.expect("a first sample");

    // Five transactions, each a statement of its own. A backend reports its counts when it
    // ends, so closing the connection has them counted at once.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&database)
        .await
        .expect("connecting");
    for _ in 0..5 {
        sqlx::query("SELECT 1")
            .execute(&mut conn)
            .await
            .expect("a query");
    }
    sqlx::Connection::close(conn).await.expect("closing");

    let per_order = testkit::eventually("the commits counted", SETTLE, || async {
        let after = commits::sample(&server).await.ok()?;
        let per_order = commits::per_order(&before, &after, 5);
        (per_order.get(&name).copied().unwrap_or(0.0) >= 1.0).then_some(per_order)
    })
    .await;
    // Connecting commits a transaction or two of its own besides the five.
    let counted = per_order[&name];
    assert!((1.0..2.0).contains(&counted), "{per_order:?}");
    assert!(
        !per_order.contains_key(server.rsplit('/').next().expect("a name")),
        "the database the samples are read from is left out: {per_order:?}"
    );
}
