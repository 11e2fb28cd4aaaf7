//! Shared by the chaos test targets: a small run's arguments and what its report must show.

use clap::Parser;
use shopctl::chaos::{ChaosArgs, Report};

/// `shopctl chaos` arguments as the command line gives them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ChaosArgs,
}

/// A small run on free ports with the binaries of this build: 150 orders, slow enough that
/// every fault lands while orders flow.
pub fn small_run(extra: &[&str]) -> ChaosArgs {
    let shopctl = std::path::Path::new(env!("CARGO_BIN_EXE_shopctl"));
    let broker = testkit::free_port().to_string();
    let base = testkit::free_port_run(11).to_string();
    let bin_dir = shopctl.parent().expect("a folder").display().to_string();
    let mut argv = vec![
        "chaos",
        "--orders",
        "150",
        "--concurrency",
        "6",
        "--orders-per-second",
        "15",
        "--broker-port",
        &broker,
        "--http-port-base",
        &base,
        "--bin-dir",
        &bin_dir,
    ];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).args
}

/// What every small run must show.
pub fn assert_sound(report: &Report, faults: &[&str]) {
    report.print();
    assert_eq!(
        report.violations,
        Vec::<String>::new(),
        "no invariant is violated"
    );
    assert!(report.orders >= 150);
    assert!(report.confirmed > 0, "orders confirm");
    for fault in faults {
        assert!(
            report
                .faults
                .iter()
                .any(|(name, result)| name == fault && result.starts_with("done")),
            "{fault} was injected: {:?}",
            report.faults
        );
    }
    assert!(
        report.after_faults.iter().all(Option::is_some) && !report.after_faults.is_empty(),
        "every order after the faults confirmed in time: {:?}",
        report.after_faults
    );
}

/// The faults every run injects, whatever the database.
pub const FAULTS: &[&str] = &[
    "kill -9 order-service",
    "kill -9 product-service",
    "kill -9 coupon-service",
    "kill -9 analytics-forwarder",
    "restart broker",
    "duplicate events",
];
