//! How a service is assembled and run: [`Runtime`] holds what every service has (database,
//! producer, outbox, metrics, settings), and [`App`] is one HTTP listener plus the background
//! workers (relay, consumers, timers) that run until one shutdown token is cancelled.
//!
//! [`App::run`] is what `main` calls; [`App::spawn`] is what tests call, with a listener on
//! port 0, to get the real address back and stop the service when they choose.
//!
//! Every worker runs until shutdown. One that ends before (it returned, or it panicked) leaves
//! the service half alive, so [`App::run`] then stops everything and returns an error, and
//! [`exit`] ends the process with a non-zero status for its supervisor (compose's restart
//! policy, `shopctl up`) to start it again.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use anyhow::Context;
use axum::Router;
use futures::FutureExt;
use rdkafka::producer::Producer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::consumer::{ConsumerRunner, Handler};
use crate::db::{DatabaseSettings, Db, Migrations, connect_and_migrate, connect_http_pool};
use crate::health::Health;
use crate::housekeeping::RetentionSettings;
use crate::http::{HttpSettings, Observed, finish_router};
use crate::kafka::{KafkaSettings, SharedProducer};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Relay, RelaySettings};

/// The settings every service takes, from flags or environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonSettings {
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub relay: RelaySettings,
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub retention: RetentionSettings,
    #[command(flatten)]
    pub log: crate::telemetry::LogSettings,
}

impl CommonSettings {
    /// Refuses settings that contradict each other.
    pub fn check(&self) -> anyhow::Result<()> {
        self.kafka.security.check()?;
        if self.relay.lease <= self.kafka.publish_round_bound() {
            anyhow::bail!(
                "OUTBOX_LEASE_MS ({:?}) must be more than 5 s longer than KAFKA_MESSAGE_TIMEOUT_MS ({:?}), so that the relay's lease outlives a batch",
                self.relay.lease,
                self.kafka.message_timeout
            );
        }
        Ok(())
    }

    /// Settings for a database and a broker, everything else at its default.
    pub fn new(database_url: impl Into<String>, brokers: impl Into<String>) -> Self {
        CommonSettings {
            database: DatabaseSettings::new(database_url),
            kafka: KafkaSettings::new(brokers),
            ..crate::defaults::defaults()
        }
    }
}

/// What every service has once connected.
#[derive(Clone)]
pub struct Runtime {
    /// The service's name: its consumer group, its `producer` in envelopes, its log field.
    pub name: &'static str,
    /// The background workers' pool: consumers, relay, timers.
    pub db: Db,
    /// The HTTP handlers' pool, kept apart so that neither side can starve the other.
    pub http_db: Db,
    pub producer: SharedProducer,
    pub outbox: Outbox,
    pub metrics: Metrics,
    /// What each part of the service says about itself, for `/health/ready`.
    pub health: Health,
    /// What operator endpoints check (`ADMIN_TOKEN`).
    pub admin: crate::admin::AdminToken,
    pub settings: CommonSettings,
}

impl Runtime {
    /// Connects to and migrates the database and creates the producer. The broker is not
    /// contacted yet, so a service starts (and answers `/health/ready` with 503) while the
    /// broker is down.
    pub async fn connect(
        name: &'static str,
        settings: CommonSettings,
        migrations: &Migrations,
    ) -> anyhow::Result<Self> {
        let db = connect_and_migrate(name, &settings.database, migrations)
            .await
            .context("setting up the database")?;
        let http_db = connect_http_pool(name, &settings.database)
            .await
            .context("opening the HTTP handlers' database pool")?;
        let metrics = Metrics::new();
        let producer = SharedProducer::new(&settings.kafka, name, metrics.clone())
            .context("creating the Kafka producer")?;
        settings.check()?;
        let admin = settings.http.admin()?;
        Ok(Runtime {
            admin,
            name,
            db,
            http_db,
            producer,
            outbox: Outbox::new(),
            metrics,
            health: Health::new(),
            settings,
        })
    }

    /// An idempotent consumer of `topics` in this service's group, applying `handler`.
    pub fn consumer<H: Handler>(
        &self,
        topics: &[&str],
        handler: H,
    ) -> anyhow::Result<ConsumerRunner<H>> {
        // The runner creates its clients itself, and again whenever it must rejoin.
        Ok(ConsumerRunner::new(topics, handler, self))
    }

    /// The relay that publishes this service's outbox, known in the lease table as
    /// `instance`.
    pub fn relay(&self, instance: String) -> Relay {
        Relay::new(self, instance)
    }

    /// The service's API with health, metrics and the common layers around it.
    pub fn router(&self, api: Router) -> Router {
        finish_router(
            api,
            Observed {
                db: self.http_db.clone(),
                producer: self.producer.clone(),
                metrics: self.metrics.clone(),
                health: self.health.clone(),
            },
            &self.settings.http,
        )
    }
}

/// Runs `tick` every `interval` until `shutdown`, the first time one interval from now: the
/// loop of every periodic sweep (deadlines, retention, reconciliation).
pub async fn every<F, Fut>(interval: std::time::Duration, shutdown: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        // A sweep is database work: bounded, so that a connection whose server vanished
        // cannot hang it (or the shutdown that waits for it) forever.
        tokio::select! {
            () = shutdown.cancelled() => return,
            done = crate::db::bounded(tick()) => if done.is_none() {
                tracing::warn!(bound = ?crate::db::work_timeout(), "a sweep took too long; given up, to be tried at the next interval");
            }
        }
    }
}

/// Runs a reconciliation `sweep` every `interval` until `shutdown`, counting the repairs it
/// reports under `reconciliation_repairs_total{kind}`; a failed sweep is logged and tried
/// again at the next interval.
pub async fn reconcile_every<F, Fut>(
    kind: &'static str,
    interval: std::time::Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
    mut sweep: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, sqlx::Error>>,
{
    metrics.zero("reconciliation_repairs_total", &[("kind", kind)]);
    every(interval, shutdown, || {
        let swept = sweep();
        let metrics = &metrics;
        async move {
            match swept.await {
                Ok(repairs) => {
                    let labels = [("kind", kind)];
                    metrics.add("reconciliation_repairs_total", &labels, repairs as u64);
                }
                Err(error) => {
                    tracing::warn!(%error, kind, "reconciliation sweep failed; will try again")
                }
            }
        }
    })
    .await;
}

type Worker = Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A service ready to run: a bound listener, its router, and its background workers.
pub struct App {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    workers: Vec<(&'static str, Worker)>,
    producer: Option<SharedProducer>,
    health: Option<Health>,
    limits: crate::serve::Limits,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("listener", &self.listener)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl App {
    /// An app serving `router` on `listener`.
    pub fn new(name: &'static str, listener: TcpListener, router: Router) -> Self {
        App {
            name,
            listener,
            router,
            workers: Vec::new(),
            producer: None,
            health: None,
            limits: crate::serve::Limits::default(),
        }
    }

    /// Serves with these settings' header-read timeout and connection cap (the defaults
    /// otherwise).
    pub fn with_limits(mut self, settings: &crate::http::HttpSettings) -> Self {
        self.limits = settings.into();
        self
    }

    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))
    }

    /// Adds a background worker, called `name` in logs and readiness, that runs until the
    /// token it is given is cancelled.
    pub fn worker<F, Fut>(mut self, name: &'static str, worker: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.workers
            .push((name, Box::new(move |token| Box::pin(worker(token)))));
        self
    }

    /// Reports on `runtime`'s health: a worker that stops shows in `/health/ready` too.
    pub fn with_health(mut self, runtime: &Runtime) -> Self {
        self.health = Some(runtime.health.clone());
        self
    }

    /// Adds the outbox relay, and flushes the producer on shutdown.
    pub fn with_relay(mut self, runtime: &Runtime) -> Self {
        self.producer = Some(runtime.producer.clone());
        let relay = runtime.relay(relay_instance(runtime.name, self.local_addr()));
        self.with_health(runtime)
            .worker("relay", move |token| relay.run(token))
    }

    /// Adds the retention sweep of the outbox and processed-event tables.
    pub fn with_housekeeping(self, runtime: &Runtime) -> Self {
        let (db, settings, metrics) = (
            runtime.db.clone(),
            runtime.settings.retention.clone(),
            runtime.metrics.clone(),
        );
        self.with_health(runtime).worker("retention", move |token| {
            crate::housekeeping::run(db, settings, metrics, token)
        })
    }

    /// Adds a consumer.
    pub fn with_consumer<H: Handler>(self, runtime: &Runtime, consumer: ConsumerRunner<H>) -> Self {
        self.with_health(runtime)
            .worker("consumer", move |token| consumer.run(token))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves and works until `shutdown` is cancelled, then stops taking requests and
    /// messages, lets the workers finish what they hold, and flushes the producer. A worker
    /// that ends (or panics) before shutdown stops the whole service, with an error.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(service = self.name, %addr, "listening");
        let health = self.health.unwrap_or_default();
        let mut workers = JoinSet::new();
        for (name, worker) in self.workers {
            health.up(&format!("worker:{name}"));
            let token = shutdown.clone();
            workers.spawn(async move {
                let ended = std::panic::AssertUnwindSafe(worker(token))
                    .catch_unwind()
                    .await;
                (name, ended.is_err())
            });
        }
        let server = crate::serve::serve(self.listener, self.router, self.limits, shutdown.clone());
        let mut server = std::pin::pin!(server);
        let mut broken = None;
        let served = tokio::select! {
            served = &mut server => served,
            Some(Ok((name, panicked))) = workers.join_next() => {
                let why = if panicked {
                    Some(format!("the {name} worker panicked"))
                } else if !shutdown.is_cancelled() {
                    Some(format!("the {name} worker stopped"))
                } else {
                    None
                };
                if let Some(why) = &why {
                    tracing::error!(service = self.name, "{why}; stopping the service so that it is restarted");
                    health.failing(&format!("worker:{name}"), why.clone());
                }
                broken = why;
                shutdown.cancel();
                server.await
            }
        };
        // If the server stopped on its own, stop the workers too.
        shutdown.cancel();
        while let Some(joined) = workers.join_next().await {
            if let Ok((name, true)) = joined {
                tracing::error!(
                    service = self.name,
                    worker = name,
                    "a worker panicked while stopping"
                );
                broken.get_or_insert_with(|| format!("the {name} worker panicked"));
            }
        }
        if let Some(producer) = self.producer {
            let producer = producer.get();
            let _ = tokio::task::spawn_blocking(move || {
                producer.flush(std::time::Duration::from_secs(2))
            })
            .await;
        }
        tracing::info!(service = self.name, "stopped");
        served.context("serving HTTP")?;
        match broken {
            Some(why) => anyhow::bail!("{why}"),
            None => Ok(()),
        }
    }

    /// Runs in the background; the handle tells the address and stops it.
    pub fn spawn(self) -> RunningApp {
        let addr = self.local_addr();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(self.run(shutdown.clone()));
        RunningApp {
            addr,
            shutdown,
            handle,
        }
    }
}

/// How the relay of this process is known in the lease table: the service, the host and the
/// address it serves on. A process that restarts on the same address takes its own lease
/// back at once instead of waiting for it to expire; two live replicas never share one.
fn relay_instance(service: &str, addr: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{service}@{host}:{addr}")
}

/// Ends the process after [`App::run`]: status 0 after a clean stop, 1 (with the error
/// logged) when the service broke, so that a supervisor starts it again. It exits without
/// running destructors: Kafka clients whose broker is gone can block for a long time while
/// being dropped, and everything that matters was committed or flushed already.
pub fn exit(result: anyhow::Result<()>) -> ! {
    let result = result.inspect_err(|error| {
        tracing::error!(
            error = format!("{error:#}"),
            "the service stopped on an error"
        );
    });
    crate::telemetry::flush();
    match result {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1)
        }
    }
}

/// A service running in the background, as tests use it.
#[derive(Debug)]
pub struct RunningApp {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Stops it gracefully and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
    }

    /// Waits until it stops by itself, and returns how it ended.
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.handle.await.context("the service panicked")?
    }
}
