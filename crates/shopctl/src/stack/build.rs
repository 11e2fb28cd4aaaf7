//! Building the stack's binaries with cargo, when `shopctl` runs from the workspace it was
//! built in.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::{Service, step};

/// Builds the binaries the stack runs ([`Service::ALL`]'s programs) in the workspace
/// `shopctl` was built from, if it can find it. Only those: the baseline (`sync-facade`) waits
/// until someone benchmarks it, which keeps it out of a newcomer's first run.
pub(super) fn build(bin_dir: &Path) -> anyhow::Result<()> {
    let Some(root) = workspace_root(bin_dir) else {
        return Ok(());
    };
    step("building the services (the first build takes a few minutes)");
    let profile = bin_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let mut command = cargo(root);
    // Cargo's own job count (all cores, or `CARGO_BUILD_JOBS`), as for any build.
    command.arg("build");
    for service in Service::ALL {
        command.args(["--bin", service.program().0]);
    }
    if profile == "release" {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

/// The variables cargo sets for a package's binaries and tests while it runs them.
pub(super) const CARGO_RUN_VARIABLES: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// `cargo` run in the workspace `root`, as a person runs it there.
///
/// Run from a test or a binary cargo started, it would otherwise inherit the variables cargo
/// set for that package (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …); some build scripts (`ring`'s)
/// watch them, so every dependency above them would be rebuilt, and rebuilt again by the next
/// build from the shell: about a minute and a half each time.
pub fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if CARGO_RUN_VARIABLES.contains(&name.as_ref()) || name.starts_with("CARGO_PKG_") {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// The repository `bin_dir` was built in, if it is one.
pub(super) fn workspace_root(bin_dir: &Path) -> Option<&Path> {
    bin_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.toml").is_file() && dir.join("broker/Cargo.toml").is_file())
}
