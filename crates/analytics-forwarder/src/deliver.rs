//! The delivery worker: sends due delivery rows to the data platform.
//!
//! Each round claims up to `concurrency` due rows in one statement (fewer while the
//! [`Breaker`] is open or probing; once claimed, another replica does not send them at the
//! same time), sends them concurrently with a bounded timeout, and records the outcomes,
//! every delivery of the round in one statement: DELIVERED on 2xx; on 429, 5xx, 408 or no
//! answer, a retry after exponential backoff with jitter (or the server's `Retry-After`, if
//! longer); FAILED when the data platform refuses the event for good (another 4xx) or the
//! retry budget is spent: then the event goes to the forwarder's dead-letter topic, is logged
//! as an error and counted, never dropped silently.
//! `POST /deliveries/retry` (and `shopctl dlq replay analytics-forwarder`) makes FAILED rows
//! PENDING again. The event id is the `Idempotency-Key`, so a retry of a delivery that did
//! arrive is absorbed by the data platform.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use contract::topics::{
    self, CONTENT_TYPE_JSON, HEADER_CONTENT_TYPE, HEADER_EVENT_TYPE, HEADER_TRACEPARENT,
};
use eventing::dlq::{DeadLetters, Letter, Source, Stage};
use kit::metrics::{Counters, Histograms, Level, histograms};
use kit::wake::Wake;
use kit::{Db, Metrics, TraceContext, now_ms};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::breaker::Breaker;
use crate::store::{self, Due};

/// The client deliveries go out with: HTTPS with rustls (the public roots, and those of
/// `DATA_PLATFORM_CA_FILE`), never following a redirect, bounded by the attempt's timeout.
pub fn client(settings: &DeliverySettings) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading DATA_PLATFORM_CA_FILE {}", path.display()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("DATA_PLATFORM_CA_FILE {} is not PEM", path.display()))?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().context("building the HTTP client")
}

/// How deliveries are made.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliverySettings {
    /// Base URL of the data platform; events are posted to `<url>/v1/orders`.
    #[arg(
        long = "data-platform-url",
        env = "DATA_PLATFORM_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub data_platform_url: String,
    /// A PEM file of certificate authorities to trust for an `https://` data platform, besides
    /// the public ones built in (Mozilla's, through `webpki-roots`).
    #[arg(long = "data-platform-ca-file", env = "DATA_PLATFORM_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Longest one delivery attempt may take.
    #[arg(
        long = "data-platform-timeout-ms",
        env = "DATA_PLATFORM_TIMEOUT_MS",
        default_value = "2s",
        value_parser = kit::duration::parse
    )]
    pub timeout: Duration,
    /// Attempts after which a delivery is given up (FAILED, logged, counted).
    #[arg(
        long = "delivery-max-attempts",
        env = "DELIVERY_MAX_ATTEMPTS",
        default_value_t = 30
    )]
    pub max_attempts: i64,
    /// Longest wait between two attempts of one delivery.
    #[arg(
        long = "delivery-max-backoff-ms",
        env = "DELIVERY_MAX_BACKOFF_MS",
        default_value = "30s",
        value_parser = kit::duration::parse
    )]
    pub max_backoff: Duration,
    /// Most deliveries in flight at once.
    #[arg(
        long = "delivery-concurrency",
        env = "DELIVERY_CONCURRENCY",
        default_value_t = 16
    )]
    pub concurrency: i64,
    /// Failures in a row after which the circuit breaker stops sending for a cool-down.
    #[arg(
        long = "breaker-failure-threshold",
        env = "BREAKER_FAILURE_THRESHOLD",
        default_value_t = 5
    )]
    pub breaker_threshold: u32,
    /// The breaker's first cool-down, in milliseconds; it doubles each time a probe fails.
    #[arg(
        long = "breaker-cooldown-ms",
        env = "BREAKER_COOLDOWN_MS",
        default_value = "2s",
        value_parser = kit::duration::parse
    )]
    pub breaker_cooldown: Duration,
    /// How often the worker looks for due deliveries when nothing woke it.
    #[arg(
        long = "delivery-poll-interval-ms",
        env = "DELIVERY_POLL_INTERVAL_MS",
        default_value = "250ms",
        value_parser = kit::duration::parse
    )]
    pub delivery_poll_interval: Duration,
    /// How long the worker, once woken by a new delivery, waits for more before it claims
    /// them: the deliveries of that time share one claim and one mark, two commits, instead
    /// of two each. Deliveries are off the order path, so the wait delays nothing an order
    /// waits for; a round that finds a full batch starts the next one at once.
    #[arg(
        long = "delivery-linger-ms",
        env = "DELIVERY_LINGER_MS",
        default_value = "100ms",
        value_parser = kit::duration::parse
    )]
    pub linger: Duration,
}

impl DeliverySettings {
    /// Settings for a data platform URL, everything else at its default.
    pub fn new(data_platform_url: impl Into<String>) -> Self {
        DeliverySettings {
            data_platform_url: data_platform_url.into(),
            ..kit::defaults::defaults()
        }
    }
}

/// What one attempt can come to ([`Attempt::label`]), the outcomes of
/// `delivery_duration_seconds`; `deliveries_total` counts these and [`GAVE_UP`].
const ATTEMPT_OUTCOMES: [&str; 3] = ["delivered", "retry", "refused"];
/// A delivery whose retry budget is spent.
const GAVE_UP: &str = "gave_up";

/// The labels of the forwarder's families: what an attempt or a delivery came to.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The forwarder's own families.
struct DeliveryMetrics {
    /// `deliveries_total`.
    deliveries: Counters<OutcomeLabels>,
    /// `delivery_duration_seconds`.
    duration: Histograms<OutcomeLabels>,
    /// `data_platform_circuit_open`.
    circuit_open: Level,
    /// `data_platform_circuit_opened_total`.
    circuit_opened: Counter,
}

impl DeliveryMetrics {
    /// Registers the families in `metrics`, every series at zero.
    fn register(metrics: &Metrics) -> Self {
        let families = DeliveryMetrics {
            deliveries: metrics.register(
                "deliveries",
                "Delivery attempts to the data platform, by outcome (gave_up: the retry budget is spent)",
                Counters::default(),
            ),
            duration: metrics.register(
                "delivery_duration_seconds",
                "Time of one call to the data platform, by outcome",
                histograms(),
            ),
            circuit_open: metrics.register(
                "data_platform_circuit_open",
                "1 while the breaker holds deliveries back because the data platform keeps failing",
                Level::default(),
            ),
            circuit_opened: metrics.register(
                "data_platform_circuit_opened",
                "Times the breaker opened",
                Counter::default(),
            ),
        };
        for outcome in ATTEMPT_OUTCOMES {
            drop(families.deliveries(outcome));
            drop(families.duration.get_or_create(&OutcomeLabels { outcome }));
        }
        drop(families.deliveries(GAVE_UP));
        families
    }

    /// The count of deliveries that came to `outcome`.
    fn deliveries(&self, outcome: &'static str) -> Counter {
        self.deliveries
            .get_or_create_owned(&OutcomeLabels { outcome })
    }
}

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

impl Attempt {
    /// The outcome label of `delivery_duration_seconds`.
    fn label(&self) -> &'static str {
        match self {
            Attempt::Delivered => "delivered",
            Attempt::Retry { .. } => "retry",
            Attempt::Refused { .. } => "refused",
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    Delivered,
    /// Worth trying again, not before `after` if the server said so.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// The data platform will never accept it.
    Refused {
        error: String,
    },
}

/// Sends delivery rows until shutdown.
pub struct Worker {
    db: Db,
    wake: Wake,
    metrics: DeliveryMetrics,
    settings: DeliverySettings,
    client: reqwest::Client,
    endpoint: String,
    breaker: Mutex<Breaker>,
    dead_letters: DeadLetters,
}

impl Worker {
    pub fn new(
        db: Db,
        wake: Wake,
        metrics: &Metrics,
        settings: DeliverySettings,
        dead_letters: DeadLetters,
    ) -> anyhow::Result<Self> {
        let metrics = DeliveryMetrics::register(metrics);
        let client = client(&settings)?;
        let endpoint = format!(
            "{}/v1/orders",
            settings.data_platform_url.trim_end_matches('/')
        );
        let breaker = Breaker::new(
            settings.breaker_threshold,
            settings.breaker_cooldown,
            settings.max_backoff,
        );
        Ok(Worker {
            db,
            wake,
            metrics,
            settings,
            client,
            endpoint,
            breaker: Mutex::new(breaker),
            dead_letters,
        })
    }

    /// Delivers until `shutdown`; a round in flight finishes first.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = self.settings.delivery_poll_interval;
        loop {
            let busy = match self.round().await {
                Ok(sent) => sent as i64 >= self.settings.concurrency,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "delivery round failed; will try again"
                    );
                    false
                }
            };
            if busy && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.woken() => {
                    // Wakes meanwhile are for rows the coming round claims anyway.
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(self.settings.linger) => {}
                    }
                }
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One round; returns how many deliveries it attempted.
    async fn round(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        let allowed = self
            .breaker()
            .allowed(self.settings.concurrency as usize, Instant::now());
        let open = f64::from(u8::from(allowed == 0));
        self.metrics.circuit_open.set(open);
        if allowed == 0 {
            return Ok(0);
        }
        let lease_until = now + kit::duration::as_millis_i64(self.settings.timeout * 2) + 1_000;
        let claimed = store::claim_due(&self.db, now, lease_until, allowed as i64).await?;
        let attempts = futures::future::join_all(claimed.iter().map(|d| self.attempt(d))).await;
        let mut delivered = Vec::with_capacity(claimed.len());
        for (delivery, attempt) in claimed.iter().zip(attempts) {
            if self.record(delivery, attempt).await? {
                delivered.push(delivery.event_id.as_str());
            }
        }
        // One statement for every delivery the data platform accepted. Should it fail, the
        // rows stay claimed until the lease runs out and are sent again; the data platform
        // absorbs the copies by their Idempotency-Key.
        store::mark_delivered(&self.db, &delivered).await?;
        self.metrics
            .deliveries("delivered")
            .inc_by(delivered.len() as u64);
        Ok(claimed.len())
    }

    /// One call to the data platform, timed, in a span of the event's trace whose context
    /// the call carries as its `traceparent`.
    async fn attempt(&self, delivery: &Due) -> Attempt {
        let span = tracing::info_span!(
            parent: None,
            "deliver",
            otel.name = "POST /v1/orders",
            otel.kind = "client",
            event_id = %delivery.event_id,
            event_type = %delivery.event_type,
            trace_id = tracing::field::Empty,
        );
        let trace = kit::trace::continue_in(&span, TraceContext::parse(&delivery.traceparent));
        span.record("trace_id", trace.trace_id());
        let started = Instant::now();
        let attempt = self.call(delivery, &trace).instrument(span).await;
        let outcome = OutcomeLabels {
            outcome: attempt.label(),
        };
        let seconds = started.elapsed().as_secs_f64();
        self.metrics
            .duration
            .get_or_create(&outcome)
            .observe(seconds);
        attempt
    }

    async fn call(&self, delivery: &Due, trace: &TraceContext) -> Attempt {
        let response = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .header("idempotency-key", &delivery.event_id)
            .header("traceparent", trace.header())
            .body(delivery.body.clone())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retry {
                    error: format!("no answer: {error}"),
                    after: None,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Delivered;
        }
        let after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let error = if status.is_redirection() {
            // Following it would send the order to wherever the answer points; the URL is
            // the deployer's to fix.
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nowhere");
            format!(
                "the data platform answered {status} (to {location}); redirects are not followed: fix DATA_PLATFORM_URL"
            )
        } else {
            format!("the data platform answered {status}")
        };
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            Attempt::Retry { error, after }
        } else {
            Attempt::Refused { error }
        }
    }

    /// Records what an attempt came to, but for a delivery, which the round marks for all
    /// its deliveries at once; `true` if it was one.
    async fn record(&self, delivery: &Due, attempt: Attempt) -> anyhow::Result<bool> {
        let span = tracing::info_span!(
            "delivery",
            event_id = %delivery.event_id,
            event_type = %delivery.event_type,
            attempts = delivery.attempts + 1,
        );
        self.record_in_span(delivery, attempt)
            .instrument(span)
            .await
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn record_in_span(&self, delivery: &Due, attempt: Attempt) -> anyhow::Result<bool> {
        let attempts = delivery.attempts + 1;
        match &attempt {
            Attempt::Delivered => self.breaker().success(),
            Attempt::Retry { .. } => {
                if self.breaker().failure(Instant::now()) {
                    self.metrics.circuit_opened.inc();
                    tracing::warn!(
                        "the data platform keeps failing; pausing deliveries (circuit open)"
                    );
                }
            }
            Attempt::Refused { .. } => {}
        }
        match attempt {
            Attempt::Delivered => {
                tracing::debug!("delivered");
                return Ok(true);
            }
            Attempt::Retry { error, .. } if attempts >= self.settings.max_attempts => {
                let reason = format!("retry budget of {attempts} attempts spent; last: {error}");
                self.give_up(delivery, attempts, &reason).await?;
                self.metrics.deliveries(GAVE_UP).inc();
            }
            Attempt::Retry { error, after } => {
                let max = self.settings.max_backoff;
                let backoff =
                    kit::backoff::delay_between(attempts as u32, Duration::from_millis(200), max);
                // The server's Retry-After is honoured even beyond our own backoff cap,
                // up to a bound that keeps a hostile value from parking an event for days.
                let wait = after.map_or(backoff, |after| after.min(MAX_RETRY_AFTER).max(backoff));
                let at = now_ms() + wait.as_millis() as i64;
                store::schedule_retry(&self.db, &delivery.event_id, attempts, at, &error).await?;
                self.metrics.deliveries("retry").inc();
                tracing::warn!(%error, ?wait, "delivery failed; will retry");
            }
            Attempt::Refused { error } => {
                self.give_up(delivery, attempts, &error).await?;
                self.metrics.deliveries("refused").inc();
            }
        }
        Ok(false)
    }

    /// Publishes the event to the dead-letter topic, then marks it FAILED. If the broker is
    /// down, the row stays PENDING and is tried again: nothing is dropped.
    async fn give_up(&self, delivery: &Due, attempts: i64, error: &str) -> anyhow::Result<()> {
        tracing::error!(%error, "giving up on a delivery; it goes to the dead-letter topic");
        let headers = vec![
            (
                HEADER_EVENT_TYPE.to_owned(),
                Some(delivery.event_type.clone().into_bytes()),
            ),
            (
                HEADER_CONTENT_TYPE.to_owned(),
                Some(CONTENT_TYPE_JSON.as_bytes().to_vec()),
            ),
            (
                HEADER_TRACEPARENT.to_owned(),
                Some(delivery.traceparent.clone().into_bytes()),
            ),
        ];
        let source = Source {
            topic: topics::ORDER_EVENTS,
            partition: delivery.source_partition as i32,
            offset: delivery.source_offset,
        };
        let letter = Letter {
            key: Some(delivery.order_id.as_bytes()),
            payload: Some(delivery.body.as_bytes()),
            headers,
            source,
            stage: Stage::Deliver,
            error,
        };
        self.dead_letters
            .file(&letter)
            .await
            .context("filing an undeliverable event as a dead letter")?;
        store::mark_failed(&self.db, &delivery.event_id, attempts, error).await?;
        Ok(())
    }
}
