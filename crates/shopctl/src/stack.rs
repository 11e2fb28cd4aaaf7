//! The local stack as processes: the broker and every service, started, killed and restarted
//! one by one. `shopctl up` runs it until Ctrl-C; `shopctl chaos` kills and restarts its parts.
//!
//! The broker is Tansu (`saga-broker`) by default, keeping its data in a SQLite file under the
//! data folder, so it survives restarts; or Apache Kafka, one KRaft node with its data in
//! `kafka/` under the data folder ([`BrokerKind::Kafka`], [`kafka_node`]). Each
//! service gets its own database: a SQLite file under the data folder by default, or a
//! Postgres database. Every process runs in its own process group, so a Ctrl-C in the
//! terminal reaches `shopctl` alone, which then stops the services first (so that they commit
//! their offsets) and the broker last.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventing::kafka::KafkaSettings;
use ops::topics::{contract_topics, ensure_topics};

/// A process of the stack besides the broker: one of the binaries of the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    DataPlatformMock,
    OrderService,
    ProductService,
    CouponService,
    AnalyticsForwarder,
    /// `shopctl console`, the live web page.
    Console,
}

impl Service {
    /// Every service, in start order: the mock first, so that the forwarder finds it, and the
    /// console last, so that what it watches is there.
    pub const ALL: [Service; 6] = [
        Service::DataPlatformMock,
        Service::OrderService,
        Service::ProductService,
        Service::CouponService,
        Service::AnalyticsForwarder,
        Service::Console,
    ];

    /// The services that talk to the broker.
    pub const CLIENTS: [Service; 4] = [
        Service::OrderService,
        Service::ProductService,
        Service::CouponService,
        Service::AnalyticsForwarder,
    ];

    /// The binary's name, which is also its log's and SQLite file's name.
    pub fn name(self) -> &'static str {
        match self {
            Service::DataPlatformMock => "data-platform-mock",
            Service::OrderService => contract::Service::OrderService.name(),
            Service::ProductService => contract::Service::ProductService.name(),
            Service::CouponService => contract::Service::CouponService.name(),
            Service::AnalyticsForwarder => contract::Service::AnalyticsForwarder.name(),
            Service::Console => "console",
        }
    }

    /// The binary it runs (in the folder of the stack's binaries) and its arguments.
    fn program(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Service::Console => ("shopctl", &["console"]),
            other => (other.name(), &[]),
        }
    }

    /// Its port's offset from the base port (`--http-port-base`).
    pub fn port_offset(self) -> u16 {
        match self {
            Service::OrderService => 0,
            Service::ProductService => 1,
            Service::CouponService => 2,
            Service::AnalyticsForwarder => 3,
            Service::Console => 8,
            Service::DataPlatformMock => 10,
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
    fn name(self) -> &'static str {
        match self {
            BrokerKind::Tansu => "tansu",
            BrokerKind::Kafka => "kafka",
        }
    }
}

/// Where the stack runs.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Folder for Tansu's data, SQLite databases and logs.
    pub data_dir: PathBuf,
    pub broker_port: u16,
    /// Port of the order service; the others follow [`Service::port_offset`].
    pub http_port_base: u16,
    /// Run `cargo build --bins` first, when run from the workspace.
    pub build: bool,
    /// Where the service binaries are; beside `shopctl` when absent.
    pub bin_dir: Option<PathBuf>,
    /// Which broker runs.
    pub broker: BrokerKind,
    /// Where Tansu keeps its data (Kafka keeps it on disk, always).
    pub broker_storage: BrokerStorage,
    /// `DATABASE_URL` per service; services not listed use a SQLite file in the data folder.
    pub database_urls: Vec<(Service, String)>,
    /// More environment for every service.
    pub env: Vec<(String, String)>,
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
    fn engine(self) -> &'static str {
        match self {
            BrokerStorage::Sqlite => "sqlite://tansu/tansu.db",
            BrokerStorage::Memory => "memory://tansu/",
        }
    }
}

/// One database per service that talks to the broker, `<prefix>_<service>` on the Postgres
/// server `admin` names (a role that may create databases), created when missing; their URLs.
pub async fn postgres_databases(
    admin: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(Service, String)>> {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin)
        .await
        .with_context(|| format!("connecting to {admin}"))?;
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b)
        .context("no database in the URL")?;
    let mut urls = Vec::new();
    for service in Service::CLIENTS {
        let name = format!("{prefix}_{}", service.name().replace('-', "_"));
        let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        if !exists {
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await
                .with_context(|| format!("creating the database {name}"))?;
        }
        urls.push((service, format!("{base}/{name}")));
    }
    Ok(urls)
}

/// The broker's program, found or installed.
#[derive(Debug, Clone)]
enum BrokerProgram {
    /// The `saga-broker` binary.
    Tansu(PathBuf),
    /// An Apache Kafka install.
    Kafka(kafka_node::Install),
}

/// The stack, running.
pub struct Stack {
    config: StackConfig,
    data: PathBuf,
    bin_dir: PathBuf,
    program: BrokerProgram,
    broker: Option<Child>,
    /// Where the running broker's output starts in its log.
    broker_log_start: u64,
    services: Vec<(Service, Child)>,
    /// The token every service's operator endpoints take.
    admin_token: String,
}

/// The file in a data folder that keeps the local stack's admin token.
const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The admin token a local stack keeps in `data_dir`, if it has one.
pub fn read_admin_token(data_dir: &Path) -> Option<String> {
    let token = std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE)).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The stack's admin token: `ADMIN_TOKEN` when the stack's environment or ours sets it, else
/// the one kept in the data folder, else a new random one kept there (readable by its owner
/// only) so that `shopctl` commands and the next `shopctl up` find it.
fn admin_token(config: &StackConfig, data: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let given = config
        .env
        .iter()
        .find(|(k, _)| k == "ADMIN_TOKEN")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("ADMIN_TOKEN").ok())
        .filter(|t| !t.trim().is_empty());
    if let Some(token) = given.or_else(|| read_admin_token(data)) {
        return Ok(token);
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let path = data.join(ADMIN_TOKEN_FILE);
    std::fs::write(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(token)
}

impl Stack {
    /// Builds (if asked), installs Tansu if missing, starts the broker, creates the topics and
    /// starts every service, waiting until each is ready.
    pub async fn start(config: StackConfig) -> anyhow::Result<Stack> {
        let bin_dir = match &config.bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()
                .context("finding shopctl's own path")?
                .parent()
                .map(Path::to_path_buf)
                .context("shopctl's path has no folder")?,
        };
        if config.build {
            build(&bin_dir)?;
        }
        let program = match config.broker {
            BrokerKind::Tansu => BrokerProgram::Tansu(ensure_broker(&bin_dir)?),
            BrokerKind::Kafka => BrokerProgram::Kafka(ensure_kafka(&bin_dir)?),
        };
        let broker_ports = match config.broker {
            BrokerKind::Tansu => vec![config.broker_port],
            BrokerKind::Kafka => vec![config.broker_port, kafka_controller_port(&config)?],
        };
        let ports = broker_ports.into_iter().chain(
            Service::ALL
                .iter()
                .map(|service| config.http_port_base + service.port_offset()),
        );
        for port in ports {
            if TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
                bail!(
                    "port {port} is in use: is another `shopctl up` running? (or choose other ports with --broker-port and --http-port-base)"
                );
            }
        }
        std::fs::create_dir_all(config.data_dir.join("logs"))
            .context("creating the data folder")?;
        std::fs::create_dir_all(config.data_dir.join(config.broker.name()))?;
        let data = config
            .data_dir
            .canonicalize()
            .context("resolving the data folder")?;
        let admin_token = admin_token(&config, &data)?;
        let mut stack = Stack {
            admin_token,
            config,
            data,
            bin_dir,
            program,
            broker: None,
            broker_log_start: 0,
            services: Vec::new(),
        };
        stack.start_broker().await?;
        for service in Service::ALL {
            stack.start_service(service).await?;
        }
        Ok(stack)
    }

    /// `127.0.0.1:<broker port>`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.config.broker_port)
    }

    /// `http://127.0.0.1:<port>` of a service.
    pub fn url(&self, service: Service) -> String {
        format!("http://127.0.0.1:{}", self.port(service))
    }

    fn port(&self, service: Service) -> u16 {
        self.config.http_port_base + service.port_offset()
    }

    /// The token the services' operator endpoints take (`Authorization: Bearer`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The data folder, resolved.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Starts the broker, makes sure the topics exist, and checks that it stores what it is
    /// sent.
    ///
    /// Tansu 0.6.0's SQLite storage sometimes fails as it starts (its storage task panics and
    /// every request fails from then on); a broker that fails the check is restarted, up to
    /// three times.
    pub async fn start_broker(&mut self) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.spawn_broker()?;
            match create_topics(&self.brokers()).await {
                Ok(()) if !self.broker_crashed() => return Ok(()),
                Ok(()) if attempt < 3 => {
                    step("Tansu's storage failed as it started; restarting it")
                }
                Err(error) if attempt < 3 => step(&format!(
                    "Tansu did not start well ({error:#}); restarting it"
                )),
                Ok(()) => bail!(
                    "Tansu's storage keeps failing; see {}",
                    self.broker_log().display()
                ),
                Err(error) => return Err(error),
            }
            self.stop_broker().await;
        }
    }

    fn spawn_broker(&mut self) -> anyhow::Result<()> {
        self.broker_log_start = std::fs::metadata(self.broker_log())
            .map(|m| m.len())
            .unwrap_or(0);
        let mut command = match &self.program {
            BrokerProgram::Tansu(tansu) => {
                let listener = format!("tcp://{}", self.brokers());
                step(&format!(
                    "starting Tansu on {} (data in {})",
                    self.brokers(),
                    self.data.join(BrokerKind::Tansu.name()).display()
                ));
                // Tansu reads the path of a sqlite:// URL as relative, so it runs in the data
                // folder.
                let mut command = Command::new(tansu);
                command
                    .current_dir(&self.data)
                    .args(["broker", "--listener-url", &listener])
                    .args(["--advertised-listener-url", &listener])
                    .args(["--storage-engine", self.config.broker_storage.engine()]);
                command
            }
            BrokerProgram::Kafka(install) => {
                let node = self.kafka_node()?;
                step(&format!(
                    "starting Apache Kafka {} on {} (data in {})",
                    kafka_node::compose_version(),
                    self.brokers(),
                    node.data_dir().display()
                ));
                // The first start formats the storage; later ones find the data kept.
                node.prepare(install)?;
                node.command(install)
            }
        };
        self.broker = Some(spawn(&mut command, &self.broker_log())?);
        Ok(())
    }

    /// The Kafka node of a stack on Apache Kafka.
    fn kafka_node(&self) -> anyhow::Result<kafka_node::Node> {
        Ok(kafka_node::Node {
            port: self.config.broker_port,
            controller_port: kafka_controller_port(&self.config)?,
            dir: self.data.join(BrokerKind::Kafka.name()),
            tuning: kafka_node::Tuning::Local,
        })
    }

    fn broker_log(&self) -> PathBuf {
        self.data
            .join("logs")
            .join(format!("{}.log", self.config.broker.name()))
    }

    /// Whether the running Tansu has logged a panic: its storage is then gone, and every
    /// request fails until it is restarted. Apache Kafka exits instead, which
    /// [`Stack::broker_exited`] sees.
    pub fn broker_crashed(&self) -> bool {
        if self.config.broker == BrokerKind::Kafka {
            return false;
        }
        let Ok(log) = std::fs::read(self.broker_log()) else {
            return false;
        };
        let since = usize::try_from(self.broker_log_start)
            .unwrap_or(0)
            .min(log.len());
        String::from_utf8_lossy(&log[since..]).contains("panicked at")
    }

    /// Kills the broker with SIGKILL: it writes nothing more, as in a crash.
    pub fn kill_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            let _ = broker.kill();
            let _ = broker.wait();
        }
    }

    /// Stops the broker (SIGTERM, then SIGKILL after [`BROKER_GRACE`]), waiting without
    /// blocking the async runtime.
    pub async fn stop_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            terminate(&broker);
            let exited = kit::poll::until(
                "the broker to exit",
                BROKER_GRACE,
                Duration::from_millis(100),
                || std::future::ready(broker.try_wait().ok().flatten()),
            )
            .await;
            if exited.is_err() {
                let _ = broker.kill();
                let _ = broker.wait();
            }
        }
    }

    /// Starts one service and waits until it is ready.
    pub async fn start_service(&mut self, service: Service) -> anyhow::Result<()> {
        let port = self.port(service);
        step(&format!("starting {service} on 127.0.0.1:{port}"));
        let log = self.data.join(format!("logs/{service}.log"));
        let mut child = spawn(&mut self.service_command(service, port), &log)?;
        let ready = wait_ready(&mut child, service, port, &log).await;
        self.services.push((service, child));
        ready
    }

    /// Starts another replica of `service` on `port`, on the service's database and in its
    /// consumer group, with its log in `logs/<service>-<port>.log`, and waits until it is
    /// ready. The caller owns the replica: the stack neither supervises nor stops it.
    pub async fn start_replica(&mut self, service: Service, port: u16) -> anyhow::Result<Child> {
        step(&format!(
            "starting a replica of {service} on 127.0.0.1:{port}"
        ));
        let log = self.data.join(format!("logs/{service}-{port}.log"));
        let mut child = spawn(&mut self.service_command(service, port), &log)?;
        if let Err(error) = wait_ready(&mut child, service, port, &log).await {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        Ok(child)
    }

    /// The command that runs `service` on `port`, with the stack's settings.
    fn service_command(&self, service: Service, port: u16) -> Command {
        let name = service.name();
        let database = self
            .config
            .database_urls
            .iter()
            .find(|(of, _)| *of == service)
            .map(|(_, url)| url.clone())
            .unwrap_or_else(|| {
                format!(
                    "sqlite://{}",
                    self.data.join(format!("{name}.db")).display()
                )
            });
        let (program, args) = service.program();
        let mut command = Command::new(self.bin_dir.join(program));
        command
            .args(args)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database)
            .env("KAFKA_BROKERS", self.brokers())
            .env("DATA_PLATFORM_URL", self.url(Service::DataPlatformMock))
            // Where the console (and any shopctl) finds the services.
            .env("ORDER_SERVICE_URL", self.url(Service::OrderService))
            .env("PRODUCT_SERVICE_URL", self.url(Service::ProductService))
            .env("COUPON_SERVICE_URL", self.url(Service::CouponService))
            .env(
                "ANALYTICS_FORWARDER_URL",
                self.url(Service::AnalyticsForwarder),
            )
            .env("ADMIN_TOKEN", &self.admin_token)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Services that have exited by themselves since the last look, with how they ended;
    /// they are no longer part of the stack until started again.
    pub fn exited_services(&mut self) -> Vec<(Service, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        self.services
            .retain_mut(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => {
                    exited.push((*name, status));
                    false
                }
                _ => true,
            });
        exited
    }

    /// Whether the broker has exited by itself, and how.
    pub fn broker_exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.broker.as_mut()?.try_wait().ok()??;
        self.broker = None;
        Some(status)
    }

    /// Tansu 0.6.0's SQLite storage can fail for good when idempotent producers come back
    /// after a restart (a query it expects one row from finds none, and its storage task
    /// panics; every request fails from then on). What clears it is a broker restart with
    /// every producer starting over: so the services are killed (they lose nothing: whatever
    /// they had not published is in their outbox, whatever they had not committed is
    /// redelivered), the broker restarted, and the services started again.
    pub async fn recover_broker(&mut self) -> anyhow::Result<()> {
        // The data-platform mock does not talk to the broker, and keeps what it received in
        // memory: it stays up.
        for service in Service::CLIENTS {
            self.kill_service(service);
        }
        self.stop_broker().await;
        self.start_broker().await?;
        for service in Service::CLIENTS {
            self.start_service(service).await?;
        }
        Ok(())
    }

    /// Stops a service with SIGTERM, as a supervisor does; returns how long it took to exit,
    /// or an error (after killing it) when it did not exit within `grace`.
    pub fn stop_service(&mut self, service: Service, grace: Duration) -> anyhow::Result<Duration> {
        let Some(index) = self.services.iter().position(|(s, _)| *s == service) else {
            bail!("{service} is not running");
        };
        let (_, mut child) = self.services.remove(index);
        let started = Instant::now();
        if stop_child(&mut child, grace) {
            return Ok(started.elapsed());
        }
        bail!("{service} did not stop within {grace:?} of SIGTERM")
    }

    /// Kills a service with SIGKILL: no shutdown hook runs, nothing is flushed.
    pub fn kill_service(&mut self, service: Service) {
        if let Some(index) = self.services.iter().position(|(s, _)| *s == service) {
            let (_, mut child) = self.services.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Services first (SIGTERM, then SIGKILL after `grace`), the broker last.
    pub fn stop(&mut self, grace: Duration) {
        for (_, child) in &self.services {
            terminate(child);
        }
        for (name, child) in &mut self.services {
            if !wait_for_exit(child, grace) {
                eprintln!("{name} did not stop within {grace:?}; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.services.clear();
        if let Some(mut broker) = self.broker.take() {
            let _ = stop_child(&mut broker, BROKER_GRACE);
        }
    }
}

/// How long a broker asked to stop may take: Kafka's controlled shutdown writes its logs'
/// checkpoints and takes a few seconds.
const BROKER_GRACE: Duration = Duration::from_secs(10);

/// The port of a Kafka node's controller: the broker's port plus one.
fn kafka_controller_port(config: &StackConfig) -> anyhow::Result<u16> {
    config
        .broker_port
        .checked_add(1)
        .context("the broker port must leave the next one for Kafka's controller")
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Waits until a service answers `/health/ready` on `port` with 200, failing at once if its
/// process exits.
async fn wait_ready(
    child: &mut Child,
    service: Service,
    port: u16,
    log: &Path,
) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let client = reqwest::Client::new();
    let outcome = kit::poll::until(
        &format!("{service} ready"),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let exited = child.try_wait().ok().flatten();
            let ready = client.get(&url).send();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                ready.await.ok()?.status().is_success().then_some(Ok(()))
            }
        },
    )
    .await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => bail!("{service} exited ({status}); see {}", log.display()),
        Err(timed_out) => bail!("{timed_out}; see {}", log.display()),
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`; `true` if it exited by itself
/// in time.
fn stop_child(child: &mut Child, grace: Duration) -> bool {
    terminate(child);
    if wait_for_exit(child, grace) {
        return true;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Sends SIGTERM, as a supervisor asks a process to stop.
fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

fn wait_for_exit(child: &mut Child, within: Duration) -> bool {
    kit::poll::until_blocking(
        "the process to exit",
        within,
        Duration::from_millis(100),
        || child.try_wait().ok().flatten(),
    )
    .is_ok()
}

/// Prints a step of what `shopctl` is doing.
pub fn step(what: &str) {
    println!("==> {what}");
    let _ = std::io::stdout().flush();
}

/// Runs `cargo build --bins` in the workspace `shopctl` was built from, if it can find it.
fn build(bin_dir: &Path) -> anyhow::Result<()> {
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
    command.args(["build", "--bins"]);
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
const CARGO_RUN_VARIABLES: &[&str] = &[
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

/// Finds `saga-broker` of this version in its folder of the user's cache (or `SAGA_BROKER`);
/// when it is missing, builds it there from the workspace `bin_dir` belongs to (progress
/// shown), as `scripts/install-broker.sh` does.
fn ensure_broker(bin_dir: &Path) -> anyhow::Result<PathBuf> {
    let missing = match local_broker::binary() {
        Ok(broker) => return Ok(broker),
        Err(missing @ local_broker::Error::NotInstalled { .. }) => missing,
        Err(other) => return Err(other.into()),
    };
    let Some(root) = workspace_root(bin_dir) else {
        return Err(missing.into());
    };
    step(&format!(
        "building saga-broker {} (Tansu 0.6.0, patched; about 12 minutes on 2 cores, once) into {}",
        local_broker::version(),
        local_broker::install_root()?.display()
    ));
    Ok(local_broker::install(cargo(root), root)?)
}

/// Finds Apache Kafka of the compose version (`KAFKA_HOME`, or where
/// `scripts/install-kafka.sh` puts it in the workspace `bin_dir` belongs to), and installs it
/// with that script when it is missing.
fn ensure_kafka(bin_dir: &Path) -> anyhow::Result<kafka_node::Install> {
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

/// The repository `bin_dir` was built in, if it is one.
fn workspace_root(bin_dir: &Path) -> Option<&Path> {
    bin_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.toml").is_file() && dir.join("broker/Cargo.toml").is_file())
}

/// Starts a child in its own process group, its output appended to `log`.
fn spawn(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))
}

async fn create_topics(brokers: &str) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_its_own_port_and_name() {
        let ports: std::collections::BTreeSet<u16> =
            Service::ALL.iter().map(|s| s.port_offset()).collect();
        let names: std::collections::BTreeSet<&str> =
            Service::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(ports.len(), Service::ALL.len());
        assert_eq!(names.len(), Service::ALL.len());
        assert!(Service::CLIENTS.iter().all(|s| Service::ALL.contains(s)));
        assert!(!Service::CLIENTS.contains(&Service::DataPlatformMock));
    }
}
