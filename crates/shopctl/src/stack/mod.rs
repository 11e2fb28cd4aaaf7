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
//!
//! What lives where: [`service`] names the processes and their ports, [`broker`] finds,
//! installs and starts the broker's program and creates the topics, [`process`] starts and
//! stops processes, [`secrets`] keeps the admin token, [`postgres`] makes the services'
//! databases on a Postgres server, and [`build`] runs cargo; this module holds the stack
//! itself, which puts them together.

mod broker;
mod build;
mod postgres;
mod process;
mod secrets;
mod service;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use broker::{BrokerKind, BrokerStorage};
pub use build::cargo;
pub use postgres::postgres_databases;
pub use secrets::read_admin_token;
pub use service::Service;

use broker::{
    BROKER_GRACE, BrokerProgram, create_topics, ensure_broker, ensure_kafka, kafka_controller_port,
};
use build::build;
use process::{kill, spawn, stop_child, terminate, wait_for_exit, wait_ready};
use secrets::admin_token;

/// Where the stack runs.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Folder for Tansu's data, SQLite databases and logs.
    pub data_dir: PathBuf,
    pub broker_port: u16,
    /// Port of the order service; the others follow [`Service::port_offset`].
    pub http_port_base: u16,
    /// Build the stack's binaries first, when run from the workspace.
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
            kill(&mut broker);
        }
    }

    /// Stops the broker (SIGTERM, then SIGKILL after [`BROKER_GRACE`]), waiting without
    /// blocking the async runtime.
    pub async fn stop_broker(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            stop_child(&mut broker, BROKER_GRACE).await;
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
            kill(&mut child);
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
            .env("ADMIN_TOKEN", &self.admin_token);
        // The stack's processes share one machine with each other and the broker: with a
        // runtime thread per core each, they woke one another's idle threads for every
        // event, which cost our services a tenth of their CPU per order (BENCHMARKS.md,
        // "Before and after issue 23"). One runtime thread each, unless shopctl's own
        // environment or the stack's settings name another count.
        if std::env::var_os(WORKER_THREADS).is_none() {
            command.env(WORKER_THREADS, "1");
        }
        command.envs(self.config.env.iter().map(|(k, v)| (k, v)));
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
    pub async fn stop_service(
        &mut self,
        service: Service,
        grace: Duration,
    ) -> anyhow::Result<Duration> {
        let Some(index) = self.services.iter().position(|(s, _)| *s == service) else {
            bail!("{service} is not running");
        };
        let (_, mut child) = self.services.remove(index);
        let started = Instant::now();
        if stop_child(&mut child, grace).await {
            return Ok(started.elapsed());
        }
        bail!("{service} did not stop within {grace:?} of SIGTERM")
    }

    /// Kills a service with SIGKILL: no shutdown hook runs, nothing is flushed.
    pub fn kill_service(&mut self, service: Service) {
        if let Some(index) = self.services.iter().position(|(s, _)| *s == service) {
            let (_, mut child) = self.services.remove(index);
            kill(&mut child);
        }
    }

    /// Services first (SIGTERM, then SIGKILL after `grace`), the broker last, waiting without
    /// blocking the async runtime.
    pub async fn stop(&mut self, grace: Duration) {
        for (_, child) in &self.services {
            terminate(child);
        }
        for (name, child) in &mut self.services {
            if !wait_for_exit(child, grace).await {
                eprintln!("{name} did not stop within {grace:?}; killing it");
                kill(child);
            }
        }
        self.services.clear();
        self.stop_broker().await;
    }
}

/// A stack dropped without [`Stack::stop`] (a test that failed, say) leaves nothing running:
/// what is still running is killed. A graceful stop waits, which a `Drop` may not do on an
/// async thread.
impl Drop for Stack {
    fn drop(&mut self) {
        for (_, child) in &mut self.services {
            kill(child);
        }
        if let Some(broker) = &mut self.broker {
            kill(broker);
        }
    }
}

/// The variable tokio's runtime reads for its number of worker threads (one per core when
/// unset).
pub const WORKER_THREADS: &str = "TOKIO_WORKER_THREADS";

/// Prints a step of what `shopctl` is doing.
pub fn step(what: &str) {
    println!("==> {what}");
    let _ = std::io::stdout().flush();
}
