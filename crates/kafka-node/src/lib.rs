//! Apache Kafka as one local KRaft node, broker and controller in one process, for the tests
//! (`testkit`, `TEST_BROKER=kafka`) and for `shopctl up --broker kafka`.
//!
//! - The version is the one `docker-compose.yml`'s `apache/kafka` image names
//!   ([`compose_version`]): the broker run here is the broker users deploy.
//! - `scripts/install-kafka.sh` installs it from Maven Central into
//!   `target/tools/kafka-<version>/`; [`Install::find`] finds it there or in `KAFKA_HOME`.
//! - [`Node`] says where one node listens and keeps its data, writes its `server.properties`,
//!   formats its storage once, and gives the command that starts it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `docker-compose.yml`, read when this crate is built, so that the version cannot drift.
const COMPOSE: &str = include_str!("../../../docker-compose.yml");

/// The Apache Kafka version of the `apache/kafka` image in `docker-compose.yml`.
///
/// # Panics
/// If the compose file names no `apache/kafka` image or two different versions of it: a
/// unit test and `scripts/install-kafka.sh` refuse such a file first.
pub fn compose_version() -> &'static str {
    let mut versions = COMPOSE
        .lines()
        .filter_map(|line| line.trim().strip_prefix("image: apache/kafka:"));
    let first = versions
        .next()
        .expect("docker-compose.yml runs an apache/kafka image");
    assert!(
        versions.all(|v| v == first),
        "docker-compose.yml names two apache/kafka versions"
    );
    first
}

/// Why Kafka cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Apache Kafka {version} is not installed in {home} (bash scripts/install-kafka.sh installs it)"
    )]
    NotInstalled {
        version: &'static str,
        home: PathBuf,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kafka-storage.sh format failed: {0}")]
    Format(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// An installed Apache Kafka: `bin/`, `libs/`, `config/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub home: PathBuf,
}

impl Install {
    /// Where `scripts/install-kafka.sh` installs the compose version under `workspace`.
    pub fn default_home(workspace: &Path) -> PathBuf {
        workspace
            .join("target/tools")
            .join(format!("kafka-{}", compose_version()))
    }

    /// `KAFKA_HOME` if set, else [`Install::default_home`] of `workspace`; it must hold an
    /// install of the compose version.
    pub fn find(workspace: &Path) -> Result<Install, Error> {
        let home = std::env::var_os("KAFKA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| Install::default_home(workspace));
        Install::at(home)
    }

    /// The install in `home`, if it is one of the compose version.
    pub fn at(home: PathBuf) -> Result<Install, Error> {
        let installed = std::fs::read_to_string(home.join(".installed")).unwrap_or_default();
        if installed.trim() != compose_version() || !home.join("bin").is_dir() {
            return Err(Error::NotInstalled {
                version: compose_version(),
                home,
            });
        }
        Ok(Install { home })
    }

    /// One of its `bin/` scripts.
    pub fn bin(&self, script: &str) -> PathBuf {
        self.home.join("bin").join(script)
    }
}

/// How a node is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// As compose runs it, for a local stack and benchmarks.
    Local,
    /// For tests on two cores, where two nodes may start at once: fewer threads and fewer
    /// partitions of the offsets topic, so that a node is up and its first group formed in
    /// seconds.
    Test,
}

/// One KRaft node on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Node {
    /// The PLAINTEXT port clients use.
    pub port: u16,
    /// The controller's port.
    pub controller_port: u16,
    /// Where its `server.properties`, its data (`data/`) and nothing else are kept.
    pub dir: PathBuf,
    pub tuning: Tuning,
}

/// What every node shares: one node is the whole cluster, its controller on the loopback
/// (the voter names the address the controller listens on, which compose gets wrong unless
/// it does the same), no delay before a group's first rebalance, topics only created on
/// purpose. `{…}` are filled in by [`Node::server_properties`].
const SERVER_PROPERTIES: &str = "\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
";

/// Added for [`Tuning::Test`].
const TEST_PROPERTIES: &str = "\
offsets.topic.num.partitions=3
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=4194304
";

impl Node {
    /// Its data folder (`log.dirs`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Its `server.properties` file.
    pub fn properties_path(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    /// The contents of its `server.properties`.
    pub fn server_properties(&self) -> String {
        let mut properties = SERVER_PROPERTIES
            .replace("{port}", &self.port.to_string())
            .replace("{controller}", &self.controller_port.to_string())
            .replace("{data}", &self.data_dir().display().to_string());
        if self.tuning == Tuning::Test {
            properties.push_str(TEST_PROPERTIES);
        }
        properties
    }

    /// Writes its `server.properties` (again, on each start: ports may change).
    pub fn write_properties(&self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir)
            .map_err(io(format!("creating {}", self.dir.display())))?;
        let path = self.properties_path();
        std::fs::write(&path, self.server_properties())
            .map_err(io(format!("writing {}", path.display())))
    }

    /// Whether its storage is formatted (`meta.properties` in its data folder).
    pub fn is_formatted(&self) -> bool {
        self.data_dir().join("meta.properties").is_file()
    }

    /// Writes its properties and formats its storage with a new cluster id, unless it is
    /// formatted already: data kept from an earlier run stays.
    pub fn prepare(&self, install: &Install) -> Result<(), Error> {
        self.write_properties()?;
        if self.is_formatted() {
            return Ok(());
        }
        let output = Command::new(install.bin("kafka-storage.sh"))
            .args(["format", "--ignore-formatted", "-t", &cluster_id(), "-c"])
            .arg(self.properties_path())
            .output()
            .map_err(io("running kafka-storage.sh"))?;
        if !output.status.success() {
            return Err(Error::Format(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// The command that runs it in the foreground (`kafka-server-start.sh`), with a heap of
    /// at most 512 MiB.
    pub fn command(&self, install: &Install) -> Command {
        let mut command = Command::new(install.bin("kafka-server-start.sh"));
        command
            .arg(self.properties_path())
            .env("KAFKA_HEAP_OPTS", "-Xmx512m -Xms64m");
        command
    }
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 without padding, the form
/// `kafka-storage.sh random-uuid` prints, and like Kafka's own never starting with `-`: the
/// tools would read such an id after `-t` as an option of their own and refuse to format
/// (one id in 64 did, and failed a test run).
pub fn cluster_id() -> String {
    loop {
        let id = base64_id(uuid::Uuid::new_v4().into_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// 16 bytes in URL-safe base64 without padding.
fn base64_id(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut id = String::with_capacity(22);
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        count += 8;
        while count >= 6 {
            count -= 6;
            id.push(char::from(ALPHABET[((bits >> count) & 63) as usize]));
        }
    }
    if count > 0 {
        id.push(char::from(ALPHABET[((bits << (6 - count)) & 63) as usize]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_is_22_url_safe_characters() {
        let id = cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn no_cluster_id_starts_with_a_dash_which_the_tools_would_read_as_an_option() {
        // 0xF8 is 111110 in its first six bits: `-` in URL-safe base64.
        assert!(base64_id([0xF8; 16]).starts_with('-'));
        for _ in 0..2_000 {
            let id = cluster_id();
            assert!(!id.starts_with('-'), "{id}");
        }
    }

    #[test]
    fn the_compose_file_names_one_kafka_version_of_numbers() {
        let version = compose_version();
        assert!(
            version.split('.').count() == 3 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
            "{version}"
        );
    }

    #[test]
    fn a_nodes_voter_is_where_its_controller_listens() {
        let node = Node {
            port: 4000,
            controller_port: 4001,
            dir: PathBuf::from("/tmp/node"),
            tuning: Tuning::Local,
        };
        let properties = node.server_properties();
        assert!(properties.contains("controller.quorum.voters=1@127.0.0.1:4001\n"));
        assert!(properties.contains("CONTROLLER://127.0.0.1:4001"));
        assert!(properties.contains("log.dirs=/tmp/node/data\n"));
        assert!(!properties.contains("num.io.threads"));
    }

    #[test]
    fn an_install_of_another_version_is_not_taken() {
        let home = std::env::temp_dir().join(format!("kafka-node-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(home.join("bin")).unwrap();
        std::fs::write(home.join(".installed"), "0.0.1\n").unwrap();
        assert!(matches!(
            Install::at(home.clone()),
            Err(Error::NotInstalled { .. })
        ));
        std::fs::write(home.join(".installed"), format!("{}\n", compose_version())).unwrap();
        assert_eq!(Install::at(home.clone()).unwrap().home, home);
        std::fs::remove_dir_all(home).unwrap();
    }
}
