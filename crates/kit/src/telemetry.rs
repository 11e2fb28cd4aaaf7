//! Logging and tracing setup and the shutdown signal, the things every `main` does first.
//!
//! Logs go to stderr, filtered by `RUST_LOG`. Spans go to an OpenTelemetry collector over
//! OTLP/HTTP (protobuf) only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; they are batched and
//! exported from a thread of the SDK's own, and [`flush`] sends what is left before the
//! process exits. Span export has its own level (info), so that `RUST_LOG=warn` quiets the
//! logs without cutting traces short.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How logs are written.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogSettings {
    /// `text` for people, `json` for one JSON object per line. `RUST_LOG` filters either
    /// (default `info`).
    #[arg(
        long = "log-format",
        env = "LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub format: LogFormat,
    /// Where an OpenTelemetry collector takes OTLP over HTTP (`http://jaeger:4318`); spans go
    /// to `<endpoint>/v1/traces`. Unset: no span is exported.
    #[arg(
        long = "otel-exporter-otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    pub otlp_endpoint: Option<String>,
}

/// The shape of each log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The exporter's provider, kept so that [`flush`] can send the last spans.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Sends `tracing` output to stderr in the format `settings` names, filtered by `RUST_LOG`
/// (default `info`), and exports spans as `service` when an OTLP endpoint is set.
pub fn init(service: &'static str, settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match settings.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let spans = settings
        .otlp_endpoint
        .as_deref()
        .and_then(|endpoint| match provider(service, endpoint) {
            Ok(provider) => {
                let tracer = provider.tracer(service);
                let _ = PROVIDER.set(provider);
                Some(tracing_opentelemetry::layer().with_tracer(tracer))
            }
            Err(error) => {
                eprintln!("not exporting spans to {endpoint}: {error:#}");
                None
            }
        })
        .map(|layer| layer.with_filter(LevelFilter::INFO));
    // `try_init` so that tests, which may call this many times, do not panic.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
}

/// A provider that batches spans and sends them to `<endpoint>/v1/traces`.
fn provider(service: &'static str, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// Exports the spans not yet sent; the process calls it before it exits.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// Longest a service takes to stop after Ctrl-C or SIGTERM. A clean stop takes well under a
/// second; with the broker down, closing Kafka clients can block far longer, and nothing
/// that matters is lost by not waiting: offsets not committed mean redelivery, which the
/// processed-event record absorbs, and unsent outbox rows stay in the database.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(8);

/// A token cancelled on Ctrl-C or SIGTERM: the shutdown handed to a service's `run`. If the
/// process has not ended [`SHUTDOWN_GRACE`] after the signal, it exits with status 1.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
        let _ = std::thread::Builder::new()
            .name("shutdown-grace".into())
            .spawn(|| {
                std::thread::sleep(SHUTDOWN_GRACE);
                eprintln!("the service did not stop within {SHUTDOWN_GRACE:?}; exiting now");
                std::process::exit(1);
            });
    });
    token
}
