//! Every service's OpenAPI document tells the truth: schemathesis, from PyPI, generates requests
//! from each document, valid and invalid, and runs every one of its checks against the running
//! service. A request the document allows must be accepted, one it forbids must be refused, and
//! every answer must match what the document says of it. `tests/schemathesis/` holds its
//! configuration and one check of ours; `scripts/install-test-tools.sh` installs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use shopctl::stack::Service;

mod local;

/// The schemathesis of `scripts/install-test-tools.sh`, or `SCHEMATHESIS` when that is set.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return path.into();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = workspace.join("target/tools/venv/bin/schemathesis");
    assert!(
        path.exists(),
        "schemathesis is not installed: run scripts/install-test-tools.sh (scripts/test.sh does)"
    );
    path
}

/// Runs schemathesis against one service with every check, as the operator (with the admin
/// token; its `ignored_auth` check also sends requests without it, which must get 401);
/// returns its exit status and output.
fn fuzz(base_url: &str, admin_token: &str) -> (bool, String) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let output = Command::new(schemathesis())
        .arg("--config-file")
        .arg(here.join("schemathesis.toml"))
        .args(["--no-color", "run", &format!("{base_url}/openapi.json")])
        // One worker: Python 3.11 before 3.11.8 can fail to parse source on two threads at
        // once ("AST constructor recursion depth mismatch"), which hypothesis does.
        .args([
            "--checks",
            "all",
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ])
        // Its store of examples that failed before would make one run depend on the last.
        .args(["--generation-database", "none"])
        .args(["--header", &format!("Authorization: Bearer {admin_token}")])
        .env("SCHEMATHESIS_HOOKS", here.join("hooks.py"))
        .current_dir(std::env::temp_dir())
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_accepts_what_its_document_allows_and_refuses_what_it_forbids() {
    let mut stack = local::start_stack("openapi").await;
    shopctl::up::seed_demo(&|service| stack.url(service), stack.admin_token())
        .await
        .expect("the demo products and coupons");

    let mut failed = Vec::new();
    for service in [
        Service::OrderService,
        Service::ProductService,
        Service::CouponService,
        Service::AnalyticsForwarder,
        Service::DataPlatformMock,
    ] {
        let (url, token) = (stack.url(service), stack.admin_token().to_owned());
        let (passed, report) = tokio::task::spawn_blocking(move || fuzz(&url, &token))
            .await
            .expect("the run");
        // The summary of each run is part of the test's output, failing or not.
        println!("==> schemathesis against {service}\n{report}");
        if !passed {
            failed.push(service);
        }
    }
    stack.stop(std::time::Duration::from_secs(10)).await;
    assert!(
        failed.is_empty(),
        "schemathesis found failures in {failed:?}; their reports are above"
    );
}
