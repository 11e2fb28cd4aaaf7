//! The stack's broker: which one runs, where Tansu keeps its data, finding or installing its
//! program, and creating the contract's topics on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use eventing::kafka::KafkaSettings;
use ops::topics::{contract_topics, ensure_topics};

use super::StackConfig;
use super::build::{cargo, workspace_root};
use super::step;

/// Which broker the stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BrokerKind {
    /// `saga-broker` (Tansu 0.6.0, patched), built and installed from `broker/` when missing.
    #[default]
    Tansu,
    /// Apache Kafka of the version compose deploys, one KRaft node (broker and controller,
    /// the controller on the broker's port plus one), installed by `scripts/install-kafka.sh`
    /// when missing (Java 17 and Maven); its data in `kafka/` under the data folder.
    Kafka,
}

impl BrokerKind {
    /// The broker's folder under the data folder, and its log's name in `logs/`.
    pub(super) fn name(self) -> &'static str {
        match self {
            BrokerKind::Tansu => "tansu",
            BrokerKind::Kafka => "kafka",
        }
    }
}

/// Where Tansu keeps what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BrokerStorage {
    /// A SQLite file in the data folder: it survives restarts.
    #[default]
    Sqlite,
    /// Memory: faster, and gone when the broker stops (run it with services on fresh
    /// databases, or they remember offsets the broker has lost).
    Memory,
}

impl BrokerStorage {
    /// Tansu's `--storage-engine` URL, relative to the data folder.
    pub(super) fn engine(self) -> &'static str {
        match self {
            BrokerStorage::Sqlite => "sqlite://tansu/tansu.db",
            BrokerStorage::Memory => "memory://tansu/",
        }
    }
}

/// The broker's program, found or installed.
#[derive(Debug, Clone)]
pub(super) enum BrokerProgram {
    /// The `saga-broker` binary.
    Tansu(PathBuf),
    /// An Apache Kafka install.
    Kafka(kafka_node::Install),
}

/// How long a broker asked to stop may take: Kafka's controlled shutdown writes its logs'
/// checkpoints and takes a few seconds.
pub(super) const BROKER_GRACE: Duration = Duration::from_secs(10);

/// The port of a Kafka node's controller: the broker's port plus one.
pub(super) fn kafka_controller_port(config: &StackConfig) -> anyhow::Result<u16> {
    config
        .broker_port
        .checked_add(1)
        .context("the broker port must leave the next one for Kafka's controller")
}

/// Finds `saga-broker` of this version in its folder of the user's cache (or `SAGA_BROKER`);
/// when it is missing, builds it there from the workspace `bin_dir` belongs to (progress
/// shown), as `scripts/install-broker.sh` does.
pub(super) fn ensure_broker(bin_dir: &Path) -> anyhow::Result<PathBuf> {
    let missing = match local_broker::binary() {
        Ok(broker) => return Ok(broker),
        Err(missing @ local_broker::Error::NotInstalled { .. }) => missing,
        Err(other) => return Err(other.into()),
    };
    let Some(root) = workspace_root(bin_dir) else {
        return Err(missing.into());
    };
    step(&format!(
        "building saga-broker {} (Tansu 0.6.0, patched; 7 to 9½ minutes on 2 cores, once) into {}",
        local_broker::version(),
        local_broker::install_root()?.display()
    ));
    Ok(local_broker::install(cargo(root), root)?)
}

/// Finds Apache Kafka of the compose version (`KAFKA_HOME`, or where
/// `scripts/install-kafka.sh` puts it in the workspace `bin_dir` belongs to), and installs it
/// with that script when it is missing.
pub(super) fn ensure_kafka(bin_dir: &Path) -> anyhow::Result<kafka_node::Install> {
    let Some(root) = workspace_root(bin_dir) else {
        return kafka_node::Install::at(
            std::env::var_os("KAFKA_HOME")
                .map(PathBuf::from)
                .context("KAFKA_HOME must name an Apache Kafka install outside the repository")?,
        )
        .map_err(Into::into);
    };
    if let Ok(install) = kafka_node::Install::find(root) {
        return Ok(install);
    }
    step(&format!(
        "installing Apache Kafka {} from Maven Central (scripts/install-kafka.sh, once)",
        kafka_node::compose_version()
    ));
    let status = Command::new("bash")
        .arg(root.join("scripts/install-kafka.sh"))
        .status()
        .context("running scripts/install-kafka.sh")?;
    if !status.success() {
        bail!("installing Apache Kafka failed");
    }
    Ok(kafka_node::Install::find(root)?)
}

pub(super) async fn create_topics(brokers: &str) -> anyhow::Result<()> {
    let settings = KafkaSettings::new(brokers);
    let topics = contract_topics();
    kit::poll::retry(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            match tokio::time::timeout(Duration::from_secs(5), ensure_topics(&settings, &topics))
                .await
            {
                Ok(created) => created.context("creating the topics"),
                Err(_) => bail!("the broker at {brokers} did not answer; see its log"),
            }
        },
    )
    .await
}
