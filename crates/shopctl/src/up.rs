//! `shopctl up`: the whole system on one machine, with nothing to install but Rust.
//!
//! It builds the binaries (when run from the workspace), installs Tansu if it is missing,
//! starts Tansu with its data in a SQLite file under the data folder, creates the topics,
//! starts every service on its own SQLite file and the data-platform mock, waits until each
//! answers `/health/ready`, prints where each listens, and on Ctrl-C (or SIGTERM) stops the
//! services first, so that they commit their offsets, and the broker last. Everything it
//! starts runs in its own process group, so a Ctrl-C in the terminal reaches `shopctl` alone
//! and the shutdown keeps that order. Run again on the same folder, it finds the orders, stock
//! and offsets where they were.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventing::kafka::{KafkaSettings, contract_topics, ensure_topics};
use serde_json::json;

use crate::api::{Call, call};

/// The Tansu release the project is tested with.
pub const TANSU_VERSION: &str = "0.6.0";

/// Options of `shopctl up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Folder for the broker's data, the services' databases and every log.
    #[arg(long, default_value = ".local")]
    pub data_dir: PathBuf,
    /// Port of the broker.
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,
    /// Port of the order service; product, coupon and forwarder take the next three, the
    /// data-platform mock this plus 10.
    #[arg(long, default_value_t = 8080)]
    pub http_port_base: u16,
    /// Create a few demo products and coupons when the product database is empty.
    #[arg(long)]
    pub seed_demo: bool,
    /// Do not run `cargo build` first; use the binaries beside `shopctl` as they are.
    #[arg(long)]
    pub no_build: bool,
}

/// One service `shopctl up` runs.
struct Service {
    name: &'static str,
    port: u16,
}

impl UpArgs {
    fn services(&self) -> Vec<Service> {
        let base = self.http_port_base;
        vec![
            Service {
                name: "data-platform-mock",
                port: base + 10,
            },
            Service {
                name: "order-service",
                port: base,
            },
            Service {
                name: "product-service",
                port: base + 1,
            },
            Service {
                name: "coupon-service",
                port: base + 2,
            },
            Service {
                name: "analytics-forwarder",
                port: base + 3,
            },
        ]
    }

    fn url(&self, offset: u16) -> String {
        format!("http://127.0.0.1:{}", self.http_port_base + offset)
    }
}

/// The processes started so far: killed if `shopctl up` fails half-way, stopped in order when
/// it is done.
#[derive(Default)]
struct Processes {
    services: Vec<(&'static str, Child)>,
    broker: Option<Child>,
}

impl Processes {
    /// Services first (SIGTERM, then SIGKILL after `grace`), the broker last.
    fn stop(&mut self, grace: Duration) {
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
            terminate(&broker);
            if !wait_for_exit(&mut broker, Duration::from_secs(5)) {
                let _ = broker.kill();
                let _ = broker.wait();
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Sends SIGTERM through `kill(1)`, which keeps this crate free of `unsafe`.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

fn wait_for_exit(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Runs the system until Ctrl-C or SIGTERM.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let bin_dir = std::env::current_exe()
        .context("finding shopctl's own path")?
        .parent()
        .map(Path::to_path_buf)
        .context("shopctl's path has no folder")?;
    if !args.no_build {
        build(&bin_dir)?;
    }
    let tansu = ensure_tansu()?;
    for port in std::iter::once(args.broker_port).chain(args.services().iter().map(|s| s.port)) {
        if TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
            bail!(
                "port {port} is in use: is another `shopctl up` running? (or choose other ports with --broker-port and --http-port-base)"
            );
        }
    }
    std::fs::create_dir_all(args.data_dir.join("logs")).context("creating the data folder")?;
    let data = args
        .data_dir
        .canonicalize()
        .context("resolving the data folder")?;
    let brokers = format!("127.0.0.1:{}", args.broker_port);

    let mut processes = Processes::default();
    let listener = format!("tcp://{brokers}");
    step(&format!(
        "starting Tansu on {brokers} (data in {})",
        data.join("tansu").display()
    ));
    std::fs::create_dir_all(data.join("tansu"))?;
    // Tansu reads the path of a sqlite:// URL as relative, so it runs in the data folder.
    processes.broker = Some(spawn(
        Command::new(&tansu)
            .current_dir(&data)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://tansu/tansu.db"]),
        &data.join("logs/tansu.log"),
    )?);
    create_topics(&brokers).await?;

    for service in args.services() {
        step(&format!(
            "starting {} on 127.0.0.1:{}",
            service.name, service.port
        ));
        let mut command = Command::new(bin_dir.join(service.name));
        command
            .env("HTTP_ADDR", format!("127.0.0.1:{}", service.port))
            .env(
                "DATABASE_URL",
                format!(
                    "sqlite://{}",
                    data.join(format!("{}.db", service.name)).display()
                ),
            )
            .env("KAFKA_BROKERS", &brokers)
            .env("DATA_PLATFORM_URL", args.url(10));
        let log = data.join(format!("logs/{}.log", service.name));
        processes
            .services
            .push((service.name, spawn(&mut command, &log)?));
        wait_ready(service.name, service.port, &log, &mut processes).await?;
    }
    if args.seed_demo {
        seed_demo(&args).await?;
    }
    print_summary(&args, &data);

    wait_for_signal().await;
    step("stopping: services first, then the broker");
    let grace = Duration::from_secs(15);
    tokio::task::spawn_blocking(move || processes.stop(grace)).await?;
    step("stopped");
    Ok(())
}

fn step(what: &str) {
    println!("==> {what}");
    let _ = std::io::stdout().flush();
}

/// Runs `cargo build --bins` in the workspace `shopctl` was built from, if it can find it.
fn build(bin_dir: &Path) -> anyhow::Result<()> {
    let Some(root) = bin_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.toml").is_file() && dir.join("crates").is_dir())
    else {
        return Ok(());
    };
    step("building the services (the first build takes a few minutes)");
    let profile = bin_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(root).args(["build", "-j2", "--bins"]);
    if profile == "release" {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

/// Finds `tansu`, installing it with `cargo install` (progress shown) when it is missing.
fn ensure_tansu() -> anyhow::Result<PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(cargo_bin.clone());
    for dir in candidates {
        let tansu = dir.join("tansu");
        if tansu.is_file() {
            return Ok(tansu);
        }
    }
    step(&format!(
        "installing Tansu {TANSU_VERSION} with cargo install (about 12 minutes on 2 cores, once)"
    ));
    let status = Command::new("cargo")
        .args([
            "install",
            "tansu",
            "--version",
            TANSU_VERSION,
            "--locked",
            "--features",
            "dynostore,postgres,libsql",
        ])
        .status()
        .context("running cargo install tansu")?;
    if !status.success() {
        bail!("installing Tansu failed");
    }
    cargo_bin
        .map(|dir| dir.join("tansu"))
        .filter(|tansu| tansu.is_file())
        .context("tansu was installed but is not in ~/.cargo/bin")
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            ensure_topics(&settings, &contract_topics()),
        )
        .await;
        match attempt {
            Ok(Ok(())) => return Ok(()),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(error)) => return Err(error).context("creating the topics"),
            Err(_) => bail!("the broker at {brokers} did not answer; see its log"),
        }
    }
}

async fn wait_ready(
    name: &str,
    port: u16,
    log: &Path,
    processes: &mut Processes,
) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if let Some((_, child)) = processes.services.iter_mut().find(|(n, _)| *n == name)
            && let Ok(Some(status)) = child.try_wait()
        {
            bail!("{name} exited ({status}); see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{name} was not ready within 60 s; see {}", log.display())
}

/// Demo products and coupons, created only when there is no product yet.
async fn seed_demo(args: &UpArgs) -> anyhow::Result<()> {
    let products = args.url(1);
    let exists = reqwest::get(format!("{products}/products/1"))
        .await?
        .status()
        .is_success();
    if exists {
        step("demo data: already there");
        return Ok(());
    }
    step("creating demo products and coupons");
    for (name, price, stock) in [("Mug", 1500, 100), ("Tea", 999, 50), ("Lamp", 4000, 5)] {
        let body = json!({ "name": name, "price": price, "stock": stock });
        let product = post("product-service", format!("{products}/products"), body).await?;
        println!(
            "    product {} {name}: price {price}, stock {stock}",
            product["product_id"]
        );
    }
    for (user, kind, value) in [(1, "PERCENT", 10), (1, "FIXED", 500), (2, "PERCENT", 50)] {
        let body = json!({ "user_id": user, "kind": kind, "value": value });
        let coupon = post("coupon-service", format!("{}/coupons", args.url(2)), body).await?;
        println!(
            "    coupon {} for user {user}: {kind} {value}",
            coupon["coupon_id"]
        );
    }
    // Orders are priced from the order service's catalog replica: wait until it has them.
    let client = reqwest::Client::new();
    for id in 1..=3 {
        let url = format!("{}/catalog/{id}", args.url(0));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("the order service's catalog did not receive product {id}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn post(
    service: &str,
    url: String,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    call(Call {
        service,
        method: reqwest::Method::POST,
        url,
        body: Some(body),
        idempotency_key: None,
    })
    .await
}

fn print_summary(args: &UpArgs, data: &Path) {
    let url = |offset| args.url(offset);
    println!(
        "==> the system is up (Ctrl-C stops it; logs in {})",
        data.join("logs").display()
    );
    println!("    broker               127.0.0.1:{}", args.broker_port);
    println!("    order-service        {}", url(0));
    println!("    product-service      {}", url(1));
    println!("    coupon-service       {}", url(2));
    println!("    analytics-forwarder  {}", url(3));
    println!("    data-platform-mock   {}", url(10));
    let _ = std::io::stdout().flush();
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
