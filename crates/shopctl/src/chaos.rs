//! `shopctl chaos`: a bounded load of orders against a local [`Stack`] while faults are
//! injected, then a check of the invariants the saga promises.
//!
//! The load: random products (some run out), quantities, coupons (some another user's, some
//! already used), and user cancellations, each order placed with an `Idempotency-Key` and
//! retried until some service answers, as a storefront would. The faults, in turn, spread over
//! the load: SIGKILL and restart of each service, a broker restart (its storage survives), a
//! database restart (with Postgres and a restart command), duplicate re-publication of
//! already handled events; all along, the data platform fails half of its requests and adds
//! latency. When the load ends the data platform recovers and the system settles; then:
//!
//! - every order is terminal (CONFIRMED or CANCELLED);
//! - stock is never negative, and conserved: initial = available + what confirmed orders hold
//!   (so no reservation is held by a cancelled order);
//! - each coupon is used by at most one confirmed order, and is available again when no
//!   confirmed order holds it;
//! - every order event reached the data platform exactly once in effect;
//! - no dead-letter topic holds a valid event.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use contract::topics;
use eventing::kafka::KafkaSettings;
use rand::Rng;
use rand::seq::IndexedRandom;
use rdkafka::Message;
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};

use crate::stack::{SERVICES, Stack, StackConfig, step};

/// Options of `shopctl chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Orders to place.
    #[arg(long, default_value_t = 2000)]
    pub orders: usize,
    /// Orders in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Most orders placed per second, so that the faults land while orders are flowing.
    #[arg(long, default_value_t = 50.0)]
    pub orders_per_second: f64,
    /// Products to create; their stock is sized so that most orders can be served and some
    /// products run out.
    #[arg(long, default_value_t = 20)]
    pub products: usize,
    /// Coupons to create, for users 1 to 50.
    #[arg(long, default_value_t = 60)]
    pub coupons: usize,
    /// Folder for the stack's data and logs; a fresh temporary one when absent.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 19092)]
    pub broker_port: u16,
    #[arg(long, default_value_t = 18080)]
    pub http_port_base: u16,
    /// A Postgres server (URL of a database there, as a role that may create databases) on
    /// which each service gets a fresh database; SQLite files when absent.
    #[arg(long, env = "CHAOS_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// A shell command that restarts the database server, for the database fault (for
    /// example `pg_ctlcluster 15 main restart`). Without it that fault is skipped.
    #[arg(long, env = "CHAOS_DB_RESTART_COMMAND")]
    pub db_restart_command: Option<String>,
    /// Longest the system may take to settle after the load, in seconds.
    #[arg(long, default_value_t = 180)]
    pub settle_timeout_s: u64,
    /// Do not run `cargo build` first.
    #[arg(long)]
    pub no_build: bool,
    /// Where the service binaries are; beside `shopctl` when absent.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Most orders that may end cancelled with TIMEOUT, in percent; more is a violation.
    #[arg(long, default_value_t = 5.0)]
    pub max_timeout_percent: f64,
}

/// How long an order placed after the last fault may take to confirm.
pub const LIVENESS_WITHIN: Duration = Duration::from_secs(30);
/// Orders placed after the last fault, each of which must confirm within [`LIVENESS_WITHIN`].
const LIVENESS_ORDERS: usize = 5;

/// The faults, injected in this order, spread evenly over the load.
const FAULTS: &[&str] = &[
    "kill -9 order-service",
    "duplicate events",
    "kill -9 product-service",
    "restart broker",
    "kill -9 coupon-service",
    "restart database",
    "kill -9 analytics-forwarder",
    "duplicate events",
];

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub orders: usize,
    pub confirmed: usize,
    /// How long each order placed after the last fault took to confirm; `None` for one that
    /// did not within [`LIVENESS_WITHIN`].
    pub after_faults: Vec<Option<Duration>>,
    pub cancelled: BTreeMap<String, usize>,
    pub faults: Vec<(String, String)>,
    pub violations: Vec<String>,
    pub settle: Duration,
    pub load: Duration,
}

impl Report {
    /// The share of orders cancelled because their saga deadline passed.
    pub fn timeout_share(&self) -> f64 {
        let timeouts = self.cancelled.get("TIMEOUT").copied().unwrap_or_default();
        timeouts as f64 / self.orders.max(1) as f64
    }

    /// The summary table.
    pub fn print(&self) {
        println!();
        println!("| chaos run | |");
        println!("|---|---|");
        println!("| orders placed | {} |", self.orders);
        println!("| confirmed | {} |", self.confirmed);
        for (reason, n) in &self.cancelled {
            println!("| cancelled {reason} | {n} |");
        }
        println!("| TIMEOUT share | {:.1} % |", self.timeout_share() * 100.0);
        let confirmed_after: Vec<Duration> = self.after_faults.iter().flatten().copied().collect();
        println!(
            "| orders after the faults confirmed within {} s | {} of {} (slowest {:.1} s) |",
            LIVENESS_WITHIN.as_secs(),
            confirmed_after.len(),
            self.after_faults.len(),
            confirmed_after
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
        );
        let injected = self
            .faults
            .iter()
            .filter(|(_, r)| r.starts_with("done"))
            .count();
        println!("| faults injected | {injected} |");
        for (fault, result) in &self.faults {
            println!("| fault: {fault} | {result} |");
        }
        println!("| load time | {:.1} s |", self.load.as_secs_f64());
        println!(
            "| time for the last order to settle | {:.1} s |",
            self.settle.as_secs_f64()
        );
        println!("| invariant violations | {} |", self.violations.len());
        for violation in &self.violations {
            println!("| violation | {violation} |");
        }
    }
}

/// Runs the chaos suite; fails when an invariant is violated.
pub async fn chaos(args: ChaosArgs) -> anyhow::Result<()> {
    // On Ctrl-C or SIGTERM the run is dropped, and with it the stack, which stops every
    // process it started.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        report = run(args) => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    };
    report.print();
    if !report.violations.is_empty() {
        bail!("{} invariant violation(s)", report.violations.len());
    }
    Ok(())
}

/// Runs the chaos suite and returns what it found.
pub async fn run(args: ChaosArgs) -> anyhow::Result<Report> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("shopctl-chaos-{}", uuid::Uuid::new_v4()))
    });
    let database_urls = match &args.postgres {
        Some(admin) => fresh_postgres_databases(admin).await?,
        None => Vec::new(),
    };
    let env = [
        ("SAGA_TIMEOUT_MS", "20000"),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ("DELIVERY_MAX_BACKOFF_MS", "2000"),
        ("BREAKER_COOLDOWN_MS", "1000"),
        ("RUST_LOG", "warn"),
    ];
    let stack = Stack::start(StackConfig {
        data_dir,
        broker_port: args.broker_port,
        http_port_base: args.http_port_base,
        build: !args.no_build,
        bin_dir: args.bin_dir.clone(),
        database_urls,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
    .await?;
    let client = Client::new(&stack);
    let (products, coupons) = seed(&client, &args).await?;
    let probe = seed_probe_product(&client).await?;
    client
        .put(
            &client.platform,
            "/v1/settings",
            json!({ "failure_rate": 0.5, "latency_ms": 20 }),
        )
        .await?;

    step(&format!(
        "placing {} orders while injecting faults",
        args.orders
    ));
    let started = Instant::now();
    let progress = Arc::new(AtomicUsize::new(0));
    let injected = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let brokers = stack.brokers();
    let injector = tokio::spawn(inject_faults(
        stack,
        args.clone(),
        progress.clone(),
        injected.clone(),
        stop.clone(),
    ));
    let outcome = async {
        let placed = place_orders(&client, &args, &products, &coupons, progress).await?;
        let load = started.elapsed();
        step("waiting for the last fault to be over");
        let deadline = Instant::now() + Duration::from_secs(120);
        while injected.load(Ordering::SeqCst) < FAULTS.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        step(&format!(
            "the faults are over: {LIVENESS_ORDERS} new orders must confirm within {} s",
            LIVENESS_WITHIN.as_secs()
        ));
        let (probe_orders, after_faults) = orders_after_faults(&client, probe).await?;
        // They count in the invariants like every other order.
        let mut placed = placed;
        placed.extend(probe_orders);
        let mut products = products.clone();
        products.push(probe);
        step("the data platform recovers; waiting for the system to settle");
        client
            .put(
                &client.platform,
                "/v1/settings",
                json!({ "failure_rate": 0.0, "latency_ms": 0 }),
            )
            .await?;
        let settle_started = Instant::now();
        let orders = settle(&client, &placed, Duration::from_secs(args.settle_timeout_s)).await?;
        let settle = settle_started.elapsed();
        let mut report = check(&client, &brokers, &orders, &products, &coupons).await?;
        report.load = load;
        report.settle = settle;
        for (n, took) in after_faults.iter().enumerate() {
            if took.is_none() {
                report.violations.push(format!(
                    "order {n} placed after the faults did not confirm within {} s",
                    LIVENESS_WITHIN.as_secs()
                ));
            }
        }
        report.after_faults = after_faults;
        if report.timeout_share() * 100.0 > args.max_timeout_percent {
            report.violations.push(format!(
                "{:.1} % of orders timed out (at most {} % allowed)",
                report.timeout_share() * 100.0,
                args.max_timeout_percent
            ));
        }
        anyhow::Ok(report)
    }
    .await;
    stop.store(true, Ordering::SeqCst);
    let (mut stack, faults) = injector.await.context("the fault injector panicked")?;
    stack.stop(Duration::from_secs(15));
    let mut report = outcome?;
    report.faults = faults;
    Ok(report)
}

/// A fresh database per service on the Postgres server of `admin`.
async fn fresh_postgres_databases(admin: &str) -> anyhow::Result<Vec<(String, String)>> {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin)
        .await
        .with_context(|| format!("connecting to {admin}"))?;
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b)
        .context("no database in the URL")?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut urls = Vec::new();
    for (service, _) in SERVICES.iter().filter(|(s, _)| *s != "data-platform-mock") {
        let name = format!("chaos_{}_{run}", service.replace('-', "_"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        urls.push(((*service).to_owned(), format!("{base}/{name}")));
    }
    Ok(urls)
}

/// The HTTP client of the run, retrying while a service restarts.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    order: String,
    product: String,
    coupon: String,
    platform: String,
}

impl Client {
    fn new(stack: &Stack) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            order: stack.url("order-service"),
            product: stack.url("product-service"),
            coupon: stack.url("coupon-service"),
            platform: stack.url("data-platform-mock"),
        }
    }

    /// Sends until a service answers (a killed one is back within seconds): the status and
    /// JSON body of the first answer.
    async fn send(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<(u16, Value)> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match request().send().await {
                Ok(response) if response.status().as_u16() < 500 => {
                    let status = response.status().as_u16();
                    return Ok((status, response.json().await.unwrap_or(Value::Null)));
                }
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(response) => bail!("the service answered {}", response.status()),
                Err(error) => return Err(error).context("no service answered for 90 s"),
            }
        }
    }

    /// Waits until the order service's catalog replica has a product.
    async fn wait_for_catalog(&self, product_id: i64) -> anyhow::Result<()> {
        let url = format!("{}/catalog/{product_id}", self.order);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .http
            .get(&url)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            if Instant::now() > deadline {
                bail!("product {product_id} never reached the order service's catalog");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// `POST /orders` with an `Idempotency-Key`, retried until the order service answers.
    async fn place(&self, key: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}/orders", self.order);
        self.send(|| {
            self.http
                .post(&url)
                .header("Idempotency-Key", key)
                .json(body)
        })
        .await
    }

    async fn get(&self, base: &str, path: &str) -> anyhow::Result<Value> {
        let url = format!("{base}{path}");
        let (status, body) = self.send(|| self.http.get(&url)).await?;
        if status != 200 {
            bail!("GET {url}: {status} {body}");
        }
        Ok(body)
    }

    async fn post(&self, base: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let url = format!("{base}{path}");
        self.send(|| self.http.post(&url).json(&body)).await
    }

    async fn put(&self, base: &str, path: &str, body: Value) -> anyhow::Result<()> {
        let url = format!("{base}{path}");
        self.send(|| self.http.put(&url).json(&body))
            .await
            .map(|_| ())
    }
}

/// A product as created: its id and initial stock.
#[derive(Debug, Clone, Copy)]
struct Product {
    id: i64,
    stock: i64,
}

/// A coupon as created: its id and owner.
#[derive(Debug, Clone, Copy)]
struct Coupon {
    id: i64,
    user: i64,
}

async fn seed(client: &Client, args: &ChaosArgs) -> anyhow::Result<(Vec<Product>, Vec<Coupon>)> {
    step(&format!(
        "creating {} products and {} coupons",
        args.products, args.coupons
    ));
    let mut products = Vec::new();
    for n in 0..args.products {
        // Enough stock for most orders, so that the run confirms many and still runs some
        // products out.
        let per_product = (args.orders as i64 * 4 / args.products.max(1) as i64).max(10);
        let stock = rand::rng().random_range(per_product / 2..=per_product);
        let body = json!({ "name": format!("chaos product {n}"), "price": rand::rng().random_range(100..5000), "stock": stock });
        let (status, product) = client.post(&client.product, "/products", body).await?;
        if status != 201 {
            bail!("creating a product: {status} {product}");
        }
        products.push(Product {
            id: product["product_id"].as_i64().context("product id")?,
            stock,
        });
    }
    let mut coupons = Vec::new();
    for n in 0..args.coupons {
        let user = (n % 50) as i64 + 1;
        let (kind, value) = if n % 2 == 0 {
            ("PERCENT", 10)
        } else {
            ("FIXED", 300)
        };
        let body = json!({ "user_id": user, "kind": kind, "value": value });
        let (status, coupon) = client.post(&client.coupon, "/coupons", body).await?;
        if status != 201 {
            bail!("creating a coupon: {status} {coupon}");
        }
        coupons.push(Coupon {
            id: coupon["coupon_id"].as_i64().context("coupon id")?,
            user,
        });
    }
    for product in &products {
        client.wait_for_catalog(product.id).await?;
    }
    Ok((products, coupons))
}

/// A product with ample stock that the load never orders, for the orders placed after the
/// faults.
async fn seed_probe_product(client: &Client) -> anyhow::Result<Product> {
    let body = json!({ "name": "chaos liveness probe", "price": 100, "stock": 10_000 });
    let (status, product) = client.post(&client.product, "/products", body).await?;
    if status != 201 {
        bail!("creating a product: {status} {product}");
    }
    let id = product["product_id"].as_i64().context("product id")?;
    client.wait_for_catalog(id).await?;
    Ok(Product { id, stock: 10_000 })
}

/// Places [`LIVENESS_ORDERS`] orders one after another once the faults are over; returns
/// their ids and how long each took from its first try to CONFIRMED, `None` where it did not
/// within [`LIVENESS_WITHIN`].
async fn orders_after_faults(
    client: &Client,
    probe: Product,
) -> anyhow::Result<(Vec<String>, Vec<Option<Duration>>)> {
    let mut ids = Vec::new();
    let mut took = Vec::new();
    for n in 0..LIVENESS_ORDERS {
        let started = Instant::now();
        let key = format!("chaos-after-faults-{n}-{}", uuid::Uuid::new_v4());
        let body = json!({ "user_id": 1, "items": [{ "product_id": probe.id, "quantity": 1 }] });
        let (status, order) = client.place(&key, &body).await?;
        if status != 202 && status != 200 {
            bail!("placing an order after the faults: {status} {order}");
        }
        let id = order["order_id"].as_str().context("order id")?.to_owned();
        ids.push(id.clone());
        let mut confirmed = None;
        while started.elapsed() < LIVENESS_WITHIN {
            let order = client.get(&client.order, &format!("/orders/{id}")).await?;
            match order["status"].as_str() {
                Some("CONFIRMED") => {
                    confirmed = Some(started.elapsed());
                    break;
                }
                Some("CANCELLED") => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        took.push(confirmed);
    }
    Ok((ids, took))
}

/// Places the orders with `concurrency` workers; returns their ids.
async fn place_orders(
    client: &Client,
    args: &ChaosArgs,
    products: &[Product],
    coupons: &[Coupon],
    progress: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let pace = Duration::from_secs_f64(1.0 / args.orders_per_second.max(0.01));
    let workers = (0..args.concurrency).map(|_| {
        let (client, next, progress) = (client.clone(), next.clone(), progress.clone());
        let (products, coupons, total) = (products.to_vec(), coupons.to_vec(), args.orders);
        tokio::spawn(async move {
            let mut placed = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    return Ok::<_, anyhow::Error>(placed);
                }
                // Order n leaves no earlier than n paces after the start.
                tokio::time::sleep_until(started + pace * n as u32).await;
                placed.push(place_one(&client, n, &products, &coupons).await?);
                progress.fetch_add(1, Ordering::SeqCst);
            }
        })
    });
    let mut placed = Vec::new();
    for worker in futures::future::join_all(workers).await {
        placed.extend(worker.context("an order worker panicked")??);
    }
    Ok(placed)
}

/// One random order, perhaps cancelled by its user; returns its id.
async fn place_one(
    client: &Client,
    n: usize,
    products: &[Product],
    coupons: &[Coupon],
) -> anyhow::Result<String> {
    let (body, cancel) = {
        let mut rng = rand::rng();
        let user = rng.random_range(1..=50i64);
        let lines = rng.random_range(1..=3usize);
        let chosen: Vec<&Product> = products.choose_multiple(&mut rng, lines).collect();
        let items: Vec<Value> = chosen
            .iter()
            .map(|p| json!({ "product_id": p.id, "quantity": rng.random_range(1..=3) }))
            .collect();
        let mut body = json!({ "user_id": user, "items": items });
        if rng.random_bool(0.25) {
            // Mostly the user's own coupons, sometimes anyone's.
            let own: Vec<&Coupon> = coupons.iter().filter(|c| c.user == user).collect();
            let coupon = if rng.random_bool(0.8) && !own.is_empty() {
                own.choose(&mut rng).copied()
            } else {
                coupons.choose(&mut rng)
            };
            if let Some(coupon) = coupon {
                body["coupon_id"] = json!(coupon.id);
            }
        }
        let cancel = rng
            .random_bool(0.1)
            .then(|| Duration::from_millis(rng.random_range(0..300)));
        (body, cancel)
    };
    let mut key = format!("chaos-{n}");
    let mut body = body;
    let id = loop {
        let (status, order) = client.place(&key, &body).await?;
        match status {
            200 | 202 => break order["order_id"].as_str().context("order id")?.to_owned(),
            // A coupon the order service knows is taken: the customer orders without it.
            409 | 422 if body.get("coupon_id").is_some() => {
                body.as_object_mut().map(|b| b.remove("coupon_id"));
                key.push_str("-without-coupon");
            }
            other => bail!("placing an order: {other} {order}"),
        }
    };
    if let Some(delay) = cancel {
        tokio::time::sleep(delay).await;
        client
            .post(&client.order, &format!("/orders/{id}/cancel"), json!({}))
            .await?;
    }
    Ok(id)
}

/// Injects the faults in turn as the load progresses, and keeps watching the broker until
/// `stop`: when Tansu's storage has failed for good, see [`Stack::recover_broker`]. Gives
/// the stack back with what was done.
async fn inject_faults(
    mut stack: Stack,
    args: ChaosArgs,
    progress: Arc<AtomicUsize>,
    injected: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (Stack, Vec<(String, String)>) {
    let mut done = Vec::new();
    let every = (args.orders / (FAULTS.len() + 1)).max(1);
    let mut next = 0;
    while !stop.load(Ordering::SeqCst) {
        if stack.broker_crashed() {
            step("Tansu's storage failed; restarting the broker and every service");
            let result = match stack.recover_broker().await {
                Ok(()) => "restarted the broker and every service".to_owned(),
                Err(error) => format!("failed: {error:#}"),
            };
            done.push(("broker crashed (Tansu)".to_owned(), result));
        }
        if next < FAULTS.len() && progress.load(Ordering::SeqCst) >= every * (next + 1) {
            let fault = FAULTS[next];
            next += 1;
            step(&format!("fault: {fault}"));
            let result = match inject(&mut stack, fault, &args).await {
                Ok(result) => result,
                Err(error) => format!("failed: {error:#}"),
            };
            done.push((fault.to_owned(), result));
            injected.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (stack, done)
}

async fn restart_broker(stack: &mut Stack) -> anyhow::Result<()> {
    stack.stop_broker();
    stack.start_broker().await
}

async fn inject(stack: &mut Stack, fault: &str, args: &ChaosArgs) -> anyhow::Result<String> {
    if let Some(service) = fault.strip_prefix("kill -9 ") {
        stack.kill_service(service);
        stack.start_service(service).await?;
        return Ok("done".into());
    }
    match fault {
        "restart broker" => {
            restart_broker(stack).await?;
            Ok("done".into())
        }
        "restart database" => match &args.db_restart_command {
            Some(command) => {
                let status = tokio::process::Command::new("sh")
                    .args(["-c", command])
                    .status()
                    .await?;
                if !status.success() {
                    bail!("`{command}` exited with {status}");
                }
                Ok("done".into())
            }
            None => Ok("skipped (no restart command: SQLite has no server)".into()),
        },
        "duplicate events" => {
            let republished = republish(&stack.brokers(), 200).await?;
            Ok(format!("done ({republished} events published again)"))
        }
        other => bail!("unknown fault {other}"),
    }
}

/// Publishes up to `most` already published saga events again, exactly as they were.
async fn republish(brokers: &str, most: usize) -> anyhow::Result<usize> {
    let settings = KafkaSettings::new(brokers);
    let reader = settings.clone();
    let saga = [
        topics::ORDER_EVENTS,
        topics::STOCK_EVENTS,
        topics::COUPON_EVENTS,
    ];
    let messages = tokio::task::spawn_blocking(move || {
        eventing::kafka::read_to_end(&reader, &saga, Duration::from_secs(60))
    })
    .await??;
    let sample: Vec<_> = messages
        .choose_multiple(&mut rand::rng(), most)
        .cloned()
        .collect();
    let producer = settings.producer("shopctl-chaos")?;
    for message in &sample {
        let mut record = FutureRecord::<[u8], [u8]>::to(message.topic());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        if let Some(headers) = message.headers() {
            record = record.headers(headers.clone());
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(sample.len())
}

/// Waits until every order is terminal; returns them all.
async fn settle(client: &Client, ids: &[String], within: Duration) -> anyhow::Result<Vec<Value>> {
    let deadline = Instant::now() + within;
    let mut settled = HashMap::new();
    loop {
        let pending: Vec<&String> = ids.iter().filter(|id| !settled.contains_key(*id)).collect();
        for id in pending {
            let order = client.get(&client.order, &format!("/orders/{id}")).await?;
            if order["status"] != "PENDING" {
                settled.insert(id.clone(), order);
            }
        }
        if settled.len() == ids.len() {
            return Ok(ids.iter().filter_map(|id| settled.remove(id)).collect());
        }
        if Instant::now() > deadline {
            bail!(
                "{} orders were still PENDING after {within:?}",
                ids.len() - settled.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks every invariant on the settled system.
async fn check(
    client: &Client,
    brokers: &str,
    orders: &[Value],
    products: &[Product],
    coupons: &[Coupon],
) -> anyhow::Result<Report> {
    let mut report = Report {
        orders: orders.len(),
        ..Report::default()
    };
    let mut held: HashMap<i64, i64> = HashMap::new();
    let mut coupon_holders: HashMap<i64, Vec<String>> = HashMap::new();
    for order in orders {
        let id = order["order_id"].as_str().unwrap_or_default().to_owned();
        match order["status"].as_str() {
            Some("CONFIRMED") => {
                report.confirmed += 1;
                for line in order["items"].as_array().into_iter().flatten() {
                    *held
                        .entry(line["product_id"].as_i64().unwrap_or_default())
                        .or_default() += line["quantity"].as_i64().unwrap_or_default();
                }
                if let Some(coupon) = order["coupon_id"].as_i64() {
                    coupon_holders.entry(coupon).or_default().push(id);
                }
            }
            Some("CANCELLED") => {
                *report
                    .cancelled
                    .entry(order["cancel_reason"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
            other => report
                .violations
                .push(format!("order {id} is not terminal: {other:?}")),
        }
    }

    // Stock: conserved once every compensation has run; poll briefly for the last releases.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut problems = Vec::new();
        for product in products {
            let now = client
                .get(&client.product, &format!("/products/{}", product.id))
                .await?;
            let (available, reserved) = (
                now["available"].as_i64().unwrap_or(-1),
                now["reserved"].as_i64().unwrap_or(-1),
            );
            let holds = held.get(&product.id).copied().unwrap_or_default();
            if available < 0 || reserved < 0 {
                problems.push(format!(
                    "product {} has negative stock: {available} available, {reserved} reserved",
                    product.id
                ));
            }
            if reserved != holds || available + reserved != product.stock {
                problems.push(format!(
                    "product {}: started with {}, now {available} available + {reserved} reserved, confirmed orders hold {holds}",
                    product.id, product.stock
                ));
            }
        }
        for coupon in coupons {
            let now = client
                .get(&client.coupon, &format!("/coupons/{}", coupon.id))
                .await?;
            let holders = coupon_holders.get(&coupon.id).cloned().unwrap_or_default();
            if holders.len() > 1 {
                problems.push(format!(
                    "coupon {} is used by {} confirmed orders",
                    coupon.id,
                    holders.len()
                ));
            }
            let used_by = now["used_by_order"].as_str().map(str::to_owned);
            match holders.first() {
                Some(holder) if used_by.as_ref() != Some(holder) => problems.push(format!(
                    "coupon {} is held by confirmed order {holder} but marked {used_by:?}",
                    coupon.id
                )),
                None if now["status"] == "USED" => problems.push(format!(
                    "coupon {} is USED by {used_by:?}, which is not a confirmed order",
                    coupon.id
                )),
                _ => {}
            }
        }
        if problems.is_empty() || Instant::now() > deadline {
            report.violations.extend(problems);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The data platform: each order event exactly once, once deliveries have caught up.
    let expected: HashSet<(String, String)> = orders
        .iter()
        .flat_map(|order| {
            let id = order["order_id"].as_str().unwrap_or_default().to_owned();
            let confirmed = order["timeline"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["event"] == "OrderConfirmed");
            let cancelled = order["status"] == "CANCELLED";
            let mut events = vec![(id.clone(), "OrderCreated".to_owned())];
            if confirmed {
                events.push((id.clone(), "OrderConfirmed".to_owned()));
            }
            if cancelled {
                events.push((id, "OrderCancelled".to_owned()));
            }
            events
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let platform = client.get(&client.platform, "/v1/orders").await?;
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for kept in platform["orders"].as_array().into_iter().flatten() {
            let key = (
                kept["body"]["order_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                kept["body"]["event_type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            *seen.entry(key).or_default() += 1;
        }
        let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
        let doubled: Vec<_> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        let unexpected = seen.keys().filter(|k| !expected.contains(*k)).count();
        if (missing.is_empty() && doubled.is_empty() && unexpected == 0)
            || Instant::now() > deadline
        {
            if !missing.is_empty() {
                report.violations.push(format!(
                    "{} order events never reached the data platform (first: {:?})",
                    missing.len(),
                    missing[0]
                ));
            }
            for ((order, event), n) in doubled {
                report.violations.push(format!(
                    "the data platform kept {event} of {order} {n} times"
                ));
            }
            if unexpected > 0 {
                report.violations.push(format!(
                    "the data platform kept {unexpected} events of orders never placed"
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Dead-letter topics: nothing valid may sit there.
    let settings = KafkaSettings::new(brokers);
    for service in topics::CONSUMING_SERVICES {
        let reader = settings.clone();
        let letters =
            tokio::task::spawn_blocking(move || eventing::dlq::list(&reader, service)).await??;
        let valid = letters.iter().filter(|l| l.event_id.is_some()).count();
        if valid > 0 {
            report.violations.push(format!(
                "{valid} valid event(s) in {}: first error {}",
                topics::dlq_topic(service),
                letters[0].error
            ));
        }
    }
    Ok(report)
}
