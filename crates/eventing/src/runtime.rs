//! How a service of the saga is assembled: [`Runtime`] holds what every service has
//! (database pools, producer, outbox, metrics, settings), and [`Runtime::app`] builds its
//! [`kit::App`] with every worker the runtime runs (relay, retention, consumer) and the
//! readiness checks of the database and the broker. [`Assemble`] adds those workers one by one,
//! for tests that want a part of a service.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use kit::App;
use kit::db::{DatabaseSettings, Db, Migrations, connect_and_migrate, connect_http_pool};
use kit::health::{Check, Health, Observed};
use kit::http::HttpSettings;
use kit::metrics::Metrics;
use tokio::net::TcpListener;

use crate::consumer::{ConsumerRunner, Handler};
use crate::housekeeping::RetentionSettings;
use crate::kafka::{KafkaSettings, SharedProducer};
use crate::metrics::RuntimeMetrics;
use crate::outbox::{Outbox, Relay, RelaySettings};
use crate::parts::Parts;

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
    pub log: kit::telemetry::LogSettings,
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
            ..kit::defaults::defaults()
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
    /// The service's registry, for its own families too.
    pub metrics: Metrics,
    /// The runtime's families in it.
    pub runtime_metrics: Arc<RuntimeMetrics>,
    /// What each part of the service says about itself, for `/health/ready`.
    pub health: Health,
    /// What operator endpoints check (`ADMIN_TOKEN`).
    pub admin: kit::admin::AdminToken,
    pub settings: CommonSettings,
}

impl Runtime {
    /// Checks the settings, then connects to and migrates the database (the runtime's own
    /// tables and the service's `migrations`) and creates the producer. The broker is not
    /// contacted yet, so a service starts (and answers `/health/ready` with 503) while the
    /// broker is down.
    pub async fn connect(
        name: &'static str,
        mut settings: CommonSettings,
        migrations: &Migrations,
    ) -> anyhow::Result<Self> {
        settings.check()?;
        let admin = kit::admin::AdminToken::of(&settings.http)?;
        let db = connect_and_migrate(name, &settings.database, &[&MIGRATIONS, migrations])
            .await
            .context("setting up the database")?;
        let http_db = connect_http_pool(name, &settings.database)
            .await
            .context("opening the HTTP handlers' database pool")?;
        let (metrics, runtime_metrics) = crate::metrics::registry();
        if let Some(commits) = kit::db::sqlite_commits(name, &settings.database)
            .context("counting the database's commits")?
        {
            let _ = metrics.register(
                "sqlite_commits",
                "Transactions the service's SQLite database committed, explicit or a single statement's (Postgres counts its own, in pg_stat_database)",
                commits,
            );
        }
        settings.kafka.request_counts = Some(runtime_metrics.kafka_requests.clone());
        let replacements = runtime_metrics.producer_replacements.clone();
        let producer = SharedProducer::new(&settings.kafka, name, replacements)
            .context("creating the Kafka producer")?;
        Ok(Runtime {
            admin,
            name,
            db,
            http_db,
            producer,
            outbox: Outbox::new(),
            metrics,
            runtime_metrics,
            health: Health::new(),
            settings,
        })
    }

    /// What the workers share.
    pub fn parts(&self) -> Parts {
        Parts {
            name: self.name,
            db: self.db.clone(),
            producer: self.producer.clone(),
            outbox: self.outbox.clone(),
            metrics: self.runtime_metrics.clone(),
            health: self.health.clone(),
            kafka: self.settings.kafka.clone(),
        }
    }

    /// An idempotent consumer of `topics` in this service's group, applying `handler`.
    pub fn consumer<H: Handler>(&self, topics: &[&str], handler: H) -> ConsumerRunner<H> {
        // The runner creates its clients itself, and again whenever it must rejoin.
        ConsumerRunner::new(topics, handler, &self.parts())
    }

    /// The relay that publishes this service's outbox, known in the lease table as
    /// `instance`.
    pub fn relay(&self, instance: String) -> Relay {
        Relay::new(&self.parts(), self.settings.relay.clone(), instance)
    }

    /// What the health and metrics routes of this service look at: the database (which also
    /// fills the outbox and dead-letter gauges), the broker and the producer, then every part
    /// that reports on itself.
    pub fn observed(&self) -> Observed {
        Observed::new(self.metrics.clone(), self.health.clone())
            .check(DatabaseCheck(
                self.http_db.clone(),
                self.runtime_metrics.clone(),
            ))
            .check(BrokerCheck(self.producer.clone()))
            .at_once("producer", producer_fatal(self.producer.clone()))
    }

    /// A bare app: `api` with the kit's layers and this runtime's readiness, and no worker.
    pub fn bare_app(&self, listener: TcpListener, api: Router) -> App {
        App::new(
            self.name,
            listener,
            api,
            self.observed(),
            &self.settings.http,
        )
    }

    /// The service's app, with everything the runtime gives every service: `api` behind the
    /// kit's layers and this runtime's readiness, the retention sweep, the consumer of
    /// `topics` applying `handler`, and, when `publishes`, the outbox relay (with the
    /// producer flushed on shutdown). A service adds its own workers to it.
    pub fn app<H: Handler>(
        &self,
        listener: TcpListener,
        api: Router,
        topics: &[&str],
        handler: H,
        publishes: Publishes,
    ) -> App {
        let app = self
            .bare_app(listener, api)
            .with_housekeeping(self)
            .with_consumer(self.consumer(topics, handler));
        match publishes {
            Publishes::Events => app.with_relay(self),
            Publishes::Nothing => app,
        }
    }
}

/// Whether a service publishes events of its own, and so runs the outbox relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publishes {
    Events,
    Nothing,
}

impl From<contract::Service> for Publishes {
    fn from(service: contract::Service) -> Self {
        if service.flow().produces.is_empty() {
            Publishes::Nothing
        } else {
            Publishes::Events
        }
    }
}

/// The workers of the runtime, added to an app one by one (as [`Runtime::app`] does).
pub trait Assemble: Sized {
    /// Adds the outbox relay, and flushes the producer on shutdown.
    fn with_relay(self, runtime: &Runtime) -> Self;
    /// Adds the retention sweep of the outbox and processed-event tables.
    fn with_housekeeping(self, runtime: &Runtime) -> Self;
    /// Adds a consumer.
    fn with_consumer<H: Handler>(self, consumer: ConsumerRunner<H>) -> Self;
}

impl Assemble for App {
    fn with_relay(self, runtime: &Runtime) -> Self {
        let relay = runtime.relay(relay_instance(runtime.name, self.local_addr()));
        let producer = runtime.producer.clone();
        self.worker("relay", move |token| relay.run(token))
            .on_stop(move || async move {
                let producer = producer.get();
                let _ = tokio::task::spawn_blocking(move || {
                    producer.flush(std::time::Duration::from_secs(2))
                })
                .await;
            })
    }

    fn with_housekeeping(self, runtime: &Runtime) -> Self {
        let (db, settings, metrics) = (
            runtime.db.clone(),
            runtime.settings.retention.clone(),
            runtime.runtime_metrics.retention_deleted.clone(),
        );
        self.worker("retention", move |token| {
            crate::housekeeping::run(db, settings, metrics, token)
        })
    }

    fn with_consumer<H: Handler>(self, consumer: ConsumerRunner<H>) -> Self {
        self.worker("consumer", move |token| consumer.run(token))
    }
}

type Look<'a> = Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;

/// The database answers: found by filling the outbox and dead-letter gauges from it.
struct DatabaseCheck(Db, Arc<RuntimeMetrics>);

impl Check for DatabaseCheck {
    fn name(&self) -> &'static str {
        "database"
    }

    fn look(&self) -> Look<'_> {
        let (db, metrics) = (&self.0, &self.1);
        Box::pin(async move {
            let gauges = async {
                let unsent = crate::outbox::unsent(db).await?;
                metrics.outbox_backlog.set(unsent.rows as f64);
                let age = unsent.oldest_age_ms as f64 / 1000.0;
                metrics.outbox_oldest_unsent_age.set(age);
                let parked = crate::outbox::parked(db).await?;
                metrics.outbox_parked.set(parked as f64);
                let parked = crate::dlq::parked(db).await?;
                metrics.dead_letters_parked.set(parked as f64);
                Ok::<_, sqlx::Error>(())
            };
            kit::health::answered(tokio::time::timeout(kit::health::CHECK_TIMEOUT, gauges).await)
        })
    }
}

/// The broker answers a metadata request.
struct BrokerCheck(SharedProducer);

impl Check for BrokerCheck {
    fn name(&self) -> &'static str {
        "broker"
    }

    fn look(&self) -> Look<'_> {
        let producer = self.0.get();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(None, kit::health::CHECK_TIMEOUT)
                    .err()
            })
            .await
            .unwrap_or(None)
            .map(|error| {
                tracing::warn!(%error, "readiness: the broker does not answer");
                "the broker does not answer".to_owned()
            })
        })
    }
}

/// The producer's readiness: it has not hit a fatal error.
fn producer_fatal(producer: SharedProducer) -> impl Fn() -> Option<String> + Send + Sync {
    move || {
        producer.fatal().map(|fatal| {
            tracing::warn!(%fatal, "readiness: the producer hit a fatal error");
            "the producer hit a fatal error".to_owned()
        })
    }
}

/// The runtime's own tables: the outbox, its lease, processed events, parked dead letters.
pub static MIGRATIONS: Migrations = kit::migrations!();

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kit::defaults::defaults;

    use super::*;

    #[test]
    fn every_runtime_setting_has_a_default() {
        let settings: KafkaSettings = defaults();
        assert_eq!(settings.fetch_wait_max, Duration::from_millis(500));
        assert_eq!(settings.brokers, "127.0.0.1:9092");
        let relay: RelaySettings = defaults();
        assert_eq!(relay.lease, Duration::from_secs(15));
        let common: CommonSettings = defaults();
        assert_eq!(common.kafka.session_timeout, Duration::from_secs(10));
        let retention: RetentionSettings = defaults();
        assert_eq!(retention.processed_event, Duration::from_secs(691_200));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaSettings,
    }

    fn kafka(args: &[&str]) -> Result<KafkaSettings, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("cli").chain(args.iter().copied())).map(|cli| cli.kafka)
    }

    #[test]
    fn a_duration_setting_takes_milliseconds_or_a_unit() {
        let settings = kafka(&["--kafka-session-timeout-ms", "6000"]).unwrap();
        assert_eq!(settings.session_timeout, Duration::from_secs(6));
        let settings = kafka(&["--kafka-session-timeout-ms", "6s"]).unwrap();
        assert_eq!(settings.session_timeout, Duration::from_secs(6));
        let err = kafka(&["--kafka-session-timeout-ms", "soon"]).unwrap_err();
        assert!(err.to_string().contains("is not a duration"), "{err}");
    }

    #[test]
    fn a_service_runs_the_relay_only_if_it_publishes() {
        assert_eq!(
            Publishes::from(contract::Service::OrderService),
            Publishes::Events
        );
        assert_eq!(
            Publishes::from(contract::Service::AnalyticsForwarder),
            Publishes::Nothing
        );
    }
}
