//! Apache Kafka for tests (`TEST_BROKER=kafka`): the version `docker-compose.yml` deploys, as
//! one KRaft node on free ports of 127.0.0.1 ([`kafka_node`]).
//!
//! Formatting storage costs a JVM start of its own, so each test process formats one data
//! folder once and every node it starts begins from a copy of it: each test still gets a
//! broker, topics and groups of its own, on storage nobody else has used.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use kafka_node::{Install, Node, Tuning};

/// The workspace's root folder, where `target/tools` is.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two folders below the workspace root")
        .to_path_buf()
}

/// The Kafka install the tests run: `scripts/install-kafka.sh`'s, or `KAFKA_HOME`.
pub fn install() -> anyhow::Result<Install> {
    Ok(Install::find(&workspace_root())?)
}

/// This process's folder of nodes. Folders left by test processes that have ended (each is
/// named after its process) are removed the first time.
fn process_dir() -> anyhow::Result<&'static Path> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join("saga-tests").join("kafka");
        std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(dir)
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn test_node(port: u16, controller_port: u16, dir: PathBuf) -> Node {
    Node {
        port,
        controller_port,
        dir,
        tuning: Tuning::Test,
    }
}

/// A data folder formatted once for this process.
fn formatted_template() -> anyhow::Result<&'static Path> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let format = || -> anyhow::Result<PathBuf> {
                // Formatting opens no port: any will do.
                let node = test_node(9092, 9093, process_dir()?.join("template"));
                node.prepare(&install()?)?;
                Ok(node.data_dir())
            };
            format().map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Starts a fresh node listening on `port` (its controller on `port + 1`), killed when the
/// thread that started it exits; returns the process and the path of its log.
pub(crate) fn spawn(port: u16) -> anyhow::Result<(Child, PathBuf)> {
    let install = install()?;
    let template = formatted_template()?;
    let node = test_node(
        port,
        port + 1,
        process_dir()?.join(format!("{port}-{}", uuid::Uuid::new_v4().simple())),
    );
    copy_dir(template, &node.data_dir()).context("copying the formatted Kafka storage")?;
    node.write_properties()?;
    let log_path = node.dir.join("kafka.log");
    let log = std::fs::File::create(&log_path)?;
    let mut command = node.command(&install);
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    crate::die_with_thread(&mut command);
    let child = command
        .spawn()
        .context("starting Apache Kafka (bash scripts/install-kafka.sh installs it)")?;
    Ok((child, log_path))
}

/// How long a test node may take to start and take its topics: a JVM start on a loaded
/// two-core machine.
pub(crate) const START_WITHIN: Duration = Duration::from_secs(60);
