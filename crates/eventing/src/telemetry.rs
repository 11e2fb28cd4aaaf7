//! Logging setup and the shutdown signal, the two things every `main` does first.

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

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
}

/// The shape of each log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Sends `tracing` output to stderr in the format `settings` names. `RUST_LOG` filters it
/// (default `info`).
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = settings.format == LogFormat::Json;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` so that tests, which may call this many times, do not panic.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
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
