//! How a service is assembled and run: [`Runtime`] holds what every service has (database,
//! producer, outbox, metrics, settings), and [`App`] is one HTTP listener plus the background
//! workers (relay, consumers, timers) that run until one shutdown token is cancelled.
//!
//! [`App::run`] is what `main` calls; [`App::spawn`] is what tests call, with a listener on
//! port 0, to get the real address back and stop the service when they choose.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use anyhow::Context;
use axum::Router;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::consumer::{ConsumerRunner, Handler};
use crate::db::{DatabaseSettings, Db, Migrations, connect_and_migrate};
use crate::housekeeping::RetentionSettings;
use crate::http::{HttpSettings, Observed, finish_router};
use crate::kafka::KafkaSettings;
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
}

impl CommonSettings {
    /// Settings for a database and a broker, everything else at its default.
    pub fn new(database_url: impl Into<String>, brokers: impl Into<String>) -> Self {
        CommonSettings {
            database: DatabaseSettings::new(database_url),
            kafka: KafkaSettings::new(brokers),
            relay: RelaySettings::default(),
            http: HttpSettings::default(),
            retention: RetentionSettings::default(),
        }
    }
}

/// What every service has once connected.
#[derive(Clone)]
pub struct Runtime {
    /// The service's name: its consumer group, its `producer` in envelopes, its log field.
    pub name: &'static str,
    pub db: Db,
    pub producer: FutureProducer,
    pub outbox: Outbox,
    pub metrics: Metrics,
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
        let producer = settings
            .kafka
            .producer(name)
            .context("creating the Kafka producer")?;
        Ok(Runtime {
            name,
            db,
            producer,
            outbox: Outbox::new(),
            metrics: Metrics::new(),
            settings,
        })
    }

    /// An idempotent consumer of `topics` in this service's group, applying `handler`.
    pub fn consumer<H: Handler>(
        &self,
        topics: &[&str],
        handler: H,
    ) -> anyhow::Result<ConsumerRunner<H>> {
        let consumer = self
            .settings
            .kafka
            .consumer(self.name, topics)
            .context("creating a Kafka consumer")?;
        Ok(ConsumerRunner::new(consumer, handler, self))
    }

    /// The relay that publishes this service's outbox.
    pub fn relay(&self) -> Relay {
        Relay::new(
            self.db.clone(),
            self.producer.clone(),
            self.outbox.clone(),
            self.settings.relay.clone(),
            self.metrics.clone(),
        )
    }

    /// The service's API with health, metrics and the common layers around it.
    pub fn router(&self, api: Router) -> Router {
        finish_router(
            api,
            Observed {
                db: self.db.clone(),
                producer: self.producer.clone(),
                metrics: self.metrics.clone(),
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
        tick().await;
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
    workers: Vec<Worker>,
    producer: Option<FutureProducer>,
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
        }
    }

    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))
    }

    /// Adds a background worker that runs until the token it is given is cancelled.
    pub fn worker<F, Fut>(mut self, worker: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.workers
            .push(Box::new(move |token| Box::pin(worker(token))));
        self
    }

    /// Adds the outbox relay, and flushes the producer on shutdown.
    pub fn with_relay(mut self, runtime: &Runtime) -> Self {
        self.producer = Some(runtime.producer.clone());
        let relay = runtime.relay();
        self.worker(move |token| relay.run(token))
    }

    /// Adds the retention sweep of the outbox and processed-event tables.
    pub fn with_housekeeping(self, runtime: &Runtime) -> Self {
        let (db, settings, metrics) = (
            runtime.db.clone(),
            runtime.settings.retention.clone(),
            runtime.metrics.clone(),
        );
        self.worker(move |token| crate::housekeeping::run(db, settings, metrics, token))
    }

    /// Adds a consumer.
    pub fn with_consumer<H: Handler>(self, consumer: ConsumerRunner<H>) -> Self {
        self.worker(move |token| consumer.run(token))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves and works until `shutdown` is cancelled, then stops taking requests and
    /// messages, lets the workers finish what they hold, and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(service = self.name, %addr, "listening");
        let mut workers = JoinSet::new();
        for worker in self.workers {
            workers.spawn(worker(shutdown.clone()));
        }
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        // If the server stopped on its own, stop the workers too.
        shutdown.cancel();
        while let Some(joined) = workers.join_next().await {
            if let Err(error) = joined {
                tracing::error!(service = self.name, %error, "a worker panicked");
            }
        }
        if let Some(producer) = self.producer {
            let _ = tokio::task::spawn_blocking(move || {
                producer.flush(std::time::Duration::from_secs(5))
            })
            .await;
        }
        tracing::info!(service = self.name, "stopped");
        served.context("serving HTTP")
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
}
