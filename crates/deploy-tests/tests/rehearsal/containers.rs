//! Each compose container as a process: what its image would run, with the environment, the
//! volumes and the network compose gives it.
//!
//! - `apache/kafka` without an entrypoint: Apache Kafka (`scripts/install-kafka.sh`'s install
//!   of the same version), configured from its `KAFKA_*` variables the way the image maps
//!   them and formatted with its `CLUSTER_ID`; with an entrypoint (kafka-init): that
//!   entrypoint, with the image's `/opt/kafka/bin` pointing at the installed tools.
//! - `postgres`: Debian's Postgres, initialised the way the image's entrypoint does it on an
//!   empty data folder (`initdb`, a server on a socket only, each `/docker-entrypoint-initdb.d`
//!   script, then the server for real on port 5432).
//! - our image (`build:`): the binary its `command` names, from this workspace's build.
//!
//! A volume's container path is translated to where it lives here: a bind mount to its
//! source, a named volume to a folder of the run's own.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use yaml_serde::Value;

use crate::netns::Network;

/// What the image of a container is, as far as the rehearsal can run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    KafkaBroker,
    /// A command of the Kafka image (kafka-init).
    KafkaTool,
    Postgres,
    /// Our image, built from `deploy/Dockerfile`.
    Ours,
    /// kcat: a tool, run by the checks, never started.
    Kcat,
    /// Prometheus, Jaeger, Grafana: images with nothing to run them from here.
    NotRehearsed,
}

/// One compose service, as `docker-compose config` resolved it.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub spec: Value,
    pub kind: Kind,
}

/// The image's variables that are the launcher's, not the broker's properties.
const KAFKA_NOT_PROPERTIES: &[&str] = &[
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "KAFKA_JMX_HOSTNAME",
];

/// A `KAFKA_*` variable's property name, as the apache/kafka image maps it: the prefix goes,
/// `___` becomes `-`, `__` becomes `_`, `_` becomes `.`, and the rest is lower case.
pub fn kafka_property(variable: &str) -> Option<String> {
    if KAFKA_NOT_PROPERTIES.contains(&variable) {
        return None;
    }
    let name = variable.strip_prefix("KAFKA_")?;
    Some(
        name.to_lowercase()
            .replace("___", "\u{1}")
            .replace("__", "\u{2}")
            .replace('_', ".")
            .replace('\u{1}', "-")
            .replace('\u{2}', "_"),
    )
}

impl Container {
    pub fn new(name: &str, spec: &Value) -> Container {
        let image = spec["image"].as_str().unwrap_or_default();
        let kind = if spec.get("build").is_some() {
            Kind::Ours
        } else if image.starts_with("apache/kafka:") {
            if spec.get("entrypoint").is_some() {
                Kind::KafkaTool
            } else {
                Kind::KafkaBroker
            }
        } else if image.starts_with("postgres:") {
            Kind::Postgres
        } else if image.starts_with("edenhill/kcat:") {
            Kind::Kcat
        } else {
            Kind::NotRehearsed
        };
        Container {
            name: name.to_owned(),
            spec: spec.clone(),
            kind,
        }
    }

    /// Its environment, as compose gives it.
    pub fn env(&self) -> BTreeMap<String, String> {
        deploy_tests::environment(&self.spec)
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.spec[key]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .map(|v| v.as_str().expect("a string").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Its `command`.
    pub fn command_line(&self) -> Vec<String> {
        self.strings("command")
    }

    /// Its `entrypoint`.
    pub fn entrypoint(&self) -> Vec<String> {
        self.strings("entrypoint")
    }

    /// The host whose network it shares (`network_mode: service:<name>`), or its own.
    pub fn host(&self) -> &str {
        self.spec["network_mode"]
            .as_str()
            .and_then(|mode| mode.strip_prefix("service:"))
            .unwrap_or(&self.name)
    }

    /// What it waits for: each service it depends on and the condition.
    pub fn depends_on(&self) -> Vec<(String, String)> {
        match &self.spec["depends_on"] {
            Value::Mapping(m) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().expect("a name").to_owned(),
                        v["condition"]
                            .as_str()
                            .unwrap_or("service_started")
                            .to_owned(),
                    )
                })
                .collect(),
            Value::Sequence(s) => s
                .iter()
                .map(|k| {
                    (
                        k.as_str().expect("a name").to_owned(),
                        "service_started".to_owned(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Its health check's command (`CMD` or `CMD-SHELL`), if it has one.
    pub fn healthcheck(&self) -> Option<Vec<String>> {
        let test = self.spec["healthcheck"]["test"].as_sequence()?;
        let test: Vec<String> = test
            .iter()
            .map(|v| v.as_str().expect("a string").to_owned())
            .collect();
        match test.first().map(String::as_str) {
            Some("CMD") => Some(test[1..].to_vec()),
            Some("CMD-SHELL") => Some(vec!["sh".into(), "-c".into(), test[1..].join(" ")]),
            _ => None,
        }
    }

    /// Where a path of the container is here: under the longest volume mounted above it.
    pub fn host_path(&self, inside: &str, run: &Run) -> Option<PathBuf> {
        let mut best: Option<(usize, PathBuf)> = None;
        for volume in self.strings("volumes") {
            let mut parts = volume.split(':');
            let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(rest) = inside.strip_prefix(target) else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with('/')) {
                continue;
            }
            let source = if source.starts_with('/') {
                PathBuf::from(source)
            } else {
                run.dir.join("volumes").join(source)
            };
            let rest = rest.trim_start_matches('/');
            let here = if rest.is_empty() {
                source
            } else {
                source.join(rest)
            };
            if best.as_ref().is_none_or(|(len, _)| target.len() > *len) {
                best = Some((target.len(), here));
            }
        }
        best.map(|(_, path)| path)
    }

    /// Bind mounts below `dir` in the container: (their container path, their source here).
    pub fn mounts_below(&self, dir: &str) -> Vec<(String, PathBuf)> {
        let mut mounts: Vec<(String, PathBuf)> = self
            .strings("volumes")
            .iter()
            .filter_map(|volume| {
                let mut parts = volume.split(':');
                let (source, target) = (parts.next()?, parts.next()?);
                target
                    .starts_with(&format!("{dir}/"))
                    .then(|| (target.to_owned(), PathBuf::from(source)))
            })
            .collect();
        mounts.sort();
        mounts
    }
}

/// What every container of one rehearsal shares: its folder, the network, the installs.
pub struct Run {
    /// Logs, named volumes, the Kafka properties, Postgres's socket.
    pub dir: PathBuf,
    pub network: Network,
    /// `target/debug`, with every binary of the workspace.
    pub bin_dir: PathBuf,
    pub kafka: kafka_node::Install,
    pub pg_bin: PathBuf,
}

impl Run {
    /// The installed Kafka tools: the image's `/opt/kafka/bin`.
    pub fn kafka_bin(&self) -> String {
        self.kafka.home.join("bin").display().to_string()
    }

    pub fn log(&self, container: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{container}.log"))
    }

    /// Postgres's socket folder: the image's `/var/run/postgresql`.
    pub fn pg_socket(&self) -> PathBuf {
        self.dir.join("pg-socket")
    }

    /// The environment a container's processes see: compose's, and what its image adds.
    pub fn env_of(&self, container: &Container) -> BTreeMap<String, String> {
        let mut env = container.env();
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        match container.kind {
            Kind::KafkaTool => {
                env.insert("KAFKA_BIN".into(), self.kafka_bin());
            }
            Kind::Postgres => {
                // The image's defaults, and its socket folder where clients look for it.
                env.entry("POSTGRES_USER".into())
                    .or_insert_with(|| "postgres".into());
                let user = env["POSTGRES_USER"].clone();
                env.entry("POSTGRES_DB".into()).or_insert(user);
                env.insert("PGHOST".into(), self.pg_socket().display().to_string());
                // The image's PATH has the server's programs (psql of the same version).
                let path = format!("{}:{}", self.pg_bin.display(), env["PATH"]);
                env.insert("PATH".into(), path);
            }
            _ => {}
        }
        env
    }

    /// A command run in the container's network, with its environment and nothing else,
    /// in a process group of its own that dies with the test.
    pub fn command(&self, container: &Container, program: &str) -> Command {
        let mut command = self.network.command(container.host(), program);
        command.env_clear().envs(self.env_of(container));
        command
    }

    /// Starts the container's main process; its output goes to its log.
    pub fn start(&self, container: &Container) -> Child {
        let mut command = match container.kind {
            Kind::KafkaBroker => self.kafka_broker(container),
            Kind::KafkaTool => self.kafka_tool(container),
            Kind::Postgres => self.postgres(container),
            Kind::Ours => {
                let line = container.command_line();
                let mut command = self.command(
                    container,
                    &self.bin_dir.join(&line[0]).display().to_string(),
                );
                command.args(&line[1..]);
                command
            }
            Kind::Kcat | Kind::NotRehearsed => unreachable!("{} is not started", container.name),
        };
        spawn(&mut command, &self.log(&container.name))
    }

    /// The broker's `server.properties` from its variables, formatted with its `CLUSTER_ID`.
    fn kafka_broker(&self, container: &Container) -> Command {
        let env = container.env();
        let mut properties = String::new();
        for (variable, value) in &env {
            let Some(property) = kafka_property(variable) else {
                continue;
            };
            let value = if property == "log.dirs" {
                container
                    .host_path(value, self)
                    .expect("log.dirs is a volume")
                    .display()
                    .to_string()
            } else {
                value.clone()
            };
            properties.push_str(&format!("{property}={value}\n"));
        }
        let path = self.dir.join(format!("{}.properties", container.name));
        std::fs::write(&path, properties).expect("writing the broker's properties");
        let cluster_id = env.get("CLUSTER_ID").expect("the image needs CLUSTER_ID");
        let mut format = self.command(
            container,
            &self.kafka.bin("kafka-storage.sh").display().to_string(),
        );
        format
            .args(["format", "--ignore-formatted", "-t", cluster_id, "-c"])
            .arg(&path);
        run_to_end(&mut format, &self.log(&container.name));
        let mut command = self.command(
            container,
            &self
                .kafka
                .bin("kafka-server-start.sh")
                .display()
                .to_string(),
        );
        command.arg(&path);
        command
    }

    /// An entrypoint of the Kafka image, its scripts taken from where they are mounted from.
    fn kafka_tool(&self, container: &Container) -> Command {
        let line: Vec<String> = container
            .entrypoint()
            .into_iter()
            .map(|arg| {
                container
                    .host_path(&arg, self)
                    .map_or(arg, |p| p.display().to_string())
            })
            .collect();
        let mut command = self.command(container, &line[0]);
        command.args(&line[1..]);
        command
    }

    /// Postgres as the image starts it on an empty data folder: `initdb` with the
    /// superuser's password, host connections by SCRAM from anywhere, every init script
    /// against a server that listens on its socket only, then the server on 5432.
    fn postgres(&self, container: &Container) -> Command {
        let env = self.env_of(container);
        let data = container
            .host_path("/var/lib/postgresql/data", self)
            .expect("a data volume");
        let socket = self.pg_socket();
        let log = self.log(&container.name);
        for dir in [&data, &socket] {
            std::fs::create_dir_all(dir).expect("creating Postgres's folders");
            self.open_to_postgres(dir);
            chown_postgres(dir);
        }
        let password_file = self.dir.join("pg-password");
        std::fs::write(&password_file, &env["POSTGRES_PASSWORD"]).expect("writing the password");
        chown_postgres(&password_file);
        run_to_end(
            self.as_postgres(container, "initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", &env["POSTGRES_USER"], "-E", "UTF8"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", password_file.display())),
            &log,
        );
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        rules.push_str("host all all all scram-sha-256\n");
        std::fs::write(&hba, rules).expect("writing pg_hba.conf");
        let socket_only = format!("-c listen_addresses='' -k {}", socket.display());
        run_to_end(
            self.as_postgres(container, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-o", &socket_only, "-w", "start"]),
            &log,
        );
        for (inside, script) in container.mounts_below("/docker-entrypoint-initdb.d") {
            assert!(
                inside.ends_with(".sh"),
                "only shell init scripts are rehearsed: {inside}"
            );
            // The script runs as the postgres user, who may not read the checkout (a clone
            // made under umask 077): it runs from a copy of the run's own, as a mount would
            // show it.
            let script = self.readable_copy(&script);
            let mut init = self.command(container, "setpriv");
            init.current_dir(&self.dir)
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                    "bash",
                ])
                .arg(&script);
            run_to_end(&mut init, &log);
        }
        run_to_end(
            self.as_postgres(container, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "stop"]),
            &log,
        );
        let mut server = self.as_postgres(container, "postgres");
        server
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=*", "-p", "5432", "-k"])
            .arg(&socket);
        server
    }

    /// Opens `dir` and every folder between the run's folder and it to other users, so that
    /// Postgres, which runs as its own user, can reach what is below them whatever the umask
    /// of whoever runs the tests (CI's may be 077: initdb then could not reach its data
    /// folder).
    fn open_to_postgres(&self, dir: &Path) {
        for folder in dir
            .ancestors()
            .take_while(|folder| folder.starts_with(&self.dir))
        {
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o755))
                .expect("opening a folder of the run's to the postgres user");
        }
    }

    /// A copy of `file` in the run's folder that every user may read.
    fn readable_copy(&self, file: &Path) -> PathBuf {
        let copies = self.dir.join("mounted");
        std::fs::create_dir_all(&copies).expect("a folder for mounted files");
        self.open_to_postgres(&copies);
        let copy = copies.join(file.file_name().expect("a file's name"));
        std::fs::copy(file, &copy).expect("copying a mounted file");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644))
            .expect("making a mounted file readable");
        copy
    }

    /// One of Postgres's programs, run as the `postgres` user in the container's network.
    fn as_postgres(&self, container: &Container, program: &str) -> Command {
        let mut command = self.command(container, "setpriv");
        command
            .current_dir(&self.dir)
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(self.pg_bin.join(program));
        command
    }
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown postgres {}", path.display());
}

fn open_log(log: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("opening a log")
}

/// Starts a process in a group of its own, output to `log`, killed when the test's thread
/// ends so that nothing outlives a failed run.
pub fn spawn(command: &mut Command, log: &Path) -> Child {
    let file = open_log(log);
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("a log"))
        .stderr(file)
        .process_group(0);
    testkit::die_with_thread(command);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", command.get_program()))
}

/// Runs a setup step to its end, its output to `log`, failing the test if it fails.
pub fn run_to_end(command: &mut Command, log: &Path) {
    let status = spawn(command, log)
        .wait()
        .expect("waiting for a setup step");
    assert!(
        status.success(),
        "{command:?} failed ({status}); the end of {}:\n{}",
        log.display(),
        tail(log)
    );
}

/// The last lines of a log, for a failure's message: CI keeps the test's output, not the
/// rehearsal's folder.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::kafka_property;

    #[test]
    fn kafka_variables_map_to_properties_as_the_image_maps_them() {
        assert_eq!(kafka_property("KAFKA_NODE_ID").as_deref(), Some("node.id"));
        assert_eq!(
            kafka_property("KAFKA_LISTENER_NAME_INTERNAL_SCRAM___SHA___512_SASL_JAAS_CONFIG")
                .as_deref(),
            Some("listener.name.internal.scram-sha-512.sasl.jaas.config")
        );
        assert_eq!(kafka_property("KAFKA_FOO__BAR").as_deref(), Some("foo_bar"));
        assert_eq!(kafka_property("KAFKA_HEAP_OPTS"), None);
        assert_eq!(kafka_property("CLUSTER_ID"), None);
    }
}
