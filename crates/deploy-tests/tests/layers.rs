//! The workspace's crates depend on one another as `docs/design.md`'s diagram says, no more
//! and no less: a new dependency between our crates is a design decision, and shows in the
//! diagram first.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The edges of the mermaid diagram in docs/design.md: `a[name] --> b` lines, node ids with
/// `_` where the crate's name has `-`.
fn drawn() -> BTreeSet<(String, String)> {
    let design = std::fs::read_to_string(root().join("docs/design.md")).expect("docs/design.md");
    let diagram = design
        .split("```mermaid")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a mermaid diagram in docs/design.md");
    let node = |text: &str| {
        let id = text.trim().split('[').next().unwrap_or_default();
        id.trim().replace('_', "-")
    };
    diagram
        .lines()
        .filter_map(|line| line.split_once("-->"))
        .map(|(from, to)| (node(from), node(to)))
        .collect()
}

/// The normal dependencies between workspace crates, as `cargo metadata` reads the manifests.
fn actual() -> BTreeSet<(String, String)> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let ours: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut edges = BTreeSet::new();
    for package in packages {
        let from = package["name"].as_str().expect("a name");
        for dependency in package["dependencies"].as_array().expect("dependencies") {
            let to = dependency["name"].as_str().expect("a name");
            if ours.contains(to) && dependency["kind"].is_null() {
                edges.insert((from.to_owned(), to.to_owned()));
            }
        }
    }
    edges
}

#[test]
fn the_crates_depend_on_each_other_as_the_design_draws_it() {
    let (drawn, actual) = (drawn(), actual());
    let undrawn: Vec<_> = actual.difference(&drawn).collect();
    let gone: Vec<_> = drawn.difference(&actual).collect();
    assert!(
        undrawn.is_empty() && gone.is_empty(),
        "dependencies not in docs/design.md's diagram: {undrawn:?}; drawn but gone: {gone:?}"
    );
}

#[test]
fn the_contract_depends_on_none_of_our_crates() {
    assert!(actual().iter().all(|(from, _)| from != "contract"));
}

/// Whether `package` links rdkafka, directly or through anything it depends on.
fn links_rdkafka(package: &str) -> bool {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .arg("--manifest-path")
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.starts_with("rdkafka "))
}

#[test]
fn the_kit_and_the_programs_without_a_broker_link_no_kafka_client() {
    for package in ["kit", "sync-facade", "data-platform-mock"] {
        assert!(!links_rdkafka(package), "{package} links rdkafka");
    }
    assert!(links_rdkafka("eventing"), "the check itself sees rdkafka");
}
