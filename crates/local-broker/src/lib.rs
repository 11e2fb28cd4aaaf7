//! Where the local broker, `saga-broker` (Tansu 0.6.0 with the patches of
//! `broker/PATCHES.md`), lives once built, and how it is built there.
//!
//! It is installed into a folder of its own version in the user's cache,
//! `${XDG_CACHE_HOME:-~/.cache}/saga-shop/saga-broker-<version>/bin/saga-broker`, so that:
//! - a fresh clone of the repository (or a second checkout) reuses a broker built before, as
//!   its build takes about 12 minutes;
//! - two versions live side by side, and changing branches never rebuilds one it had;
//! - nothing lands on `PATH` or over a program of the user's.
//!
//! `SAGA_BROKER` names another binary instead (a container image's, say).
//! `scripts/install-broker.sh` computes the same folder; a test checks that both agree.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The broker's manifest, whose version is the one this workspace runs.
const MANIFEST: &str = include_str!("../../../broker/Cargo.toml");

/// Why the broker cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "saga-broker {version} is not installed in {}: run scripts/install-broker.sh from the repository",
        root.display()
    )]
    NotInstalled {
        version: &'static str,
        root: PathBuf,
    },
    #[error(
        "neither XDG_CACHE_HOME nor HOME is set, so there is no cache to install saga-broker into; set SAGA_BROKER to a saga-broker binary"
    )]
    NoCache,
    #[error("running cargo install for saga-broker: {0}")]
    Cargo(#[source] std::io::Error),
    #[error("building saga-broker failed; the output above says why")]
    Build,
}

/// The version of `saga-broker` this workspace runs, as `saga-broker --version` prints it
/// after the program's name.
pub fn version() -> &'static str {
    MANIFEST
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("broker/Cargo.toml has a version")
}

/// The folder this version is installed into (its binary is in `bin/`).
pub fn install_root() -> Result<PathBuf, Error> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or(Error::NoCache)?;
    Ok(cache
        .join("saga-shop")
        .join(format!("saga-broker-{}", version())))
}

/// The binary to run: `SAGA_BROKER` if set, else this version's, if it is installed.
pub fn binary() -> Result<PathBuf, Error> {
    if let Some(named) = std::env::var_os("SAGA_BROKER").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(named));
    }
    let root = install_root()?;
    let binary = root.join("bin").join("saga-broker");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(Error::NotInstalled {
            version: version(),
            root,
        })
    }
}

/// Builds this version from the workspace at `workspace` into [`install_root`] (its build
/// files in `target/broker`) with `cargo` (a command running cargo, as the caller wants it
/// run), with cargo's progress on the terminal, and returns the binary.
pub fn install(mut cargo: Command, workspace: &Path) -> Result<PathBuf, Error> {
    let root = install_root()?;
    let status = cargo
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", workspace.join("target/broker"))
        .args(["install", "--locked", "--force", "--root"])
        .arg(&root)
        .arg("--path")
        .arg(workspace.join("broker"))
        .status()
        .map_err(Error::Cargo)?;
    if !status.success() {
        return Err(Error::Build);
    }
    binary()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_the_manifests_and_the_install_script_installs_where_this_crate_looks() {
        assert!(version().starts_with("0.6.0-saga."), "{}", version());
        let script = include_str!("../../../scripts/install-broker.sh");
        assert!(script.contains("broker/Cargo.toml"));
        assert!(
            script.contains(r#"${XDG_CACHE_HOME:-$HOME/.cache}/saga-shop/saga-broker-$want"#),
            "scripts/install-broker.sh installs elsewhere"
        );
        assert!(script.contains("--root"));
    }
}
