//! `saga-broker`: Tansu 0.6.0's broker, with the storage patches of PATCHES.md.
//!
//! The command line is ours (saga patch 9): only `broker`, with the options the local run and
//! the tests pass. Tansu's own command line (`tansu-cli`) also carries its client tools (cat,
//! generator, perf, proxy, topic, user), whose crates the broker's build compiled for nothing.
//! The options keep Tansu's names, environment variables and defaults, so that a command line
//! written for `tansu broker` with these options runs here unchanged.

use std::num::NonZeroUsize;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tansu_broker::{
    NODE_ID, TracingFormat, broker::Broker, coordinator::group::administrator::Controller, otel,
};
use tansu_sans_io::ErrorCode;
use tansu_storage::StorageContainer;
use tokio::time::Instant;
use tracing::{debug, error};
use url::Url;
use uuid::Uuid;

// saga patch 13 (PATCHES.md): mimalloc instead of the C library's allocator, in whose
// `malloc`, `free` and locks a tenth of the broker's CPU went; every request allocates its
// frame, its decoded message, the storage call's values and the answer.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
// `--version` prints `saga-broker <version>`, which the install script compares with the
// version it builds.
#[command(
    name = "saga-broker",
    version,
    about = "Tansu 0.6.0 with the order saga's patches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the broker.
    Broker(BrokerArgs),
}

#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// The cluster's id, which clients see in metadata.
    #[arg(long, env = "CLUSTER_ID", default_value = "tansu_cluster")]
    cluster_id: String,

    /// Where the broker listens, as `tcp://host:port`.
    #[arg(long, env = "LISTENER_URL", default_value = "tcp://0.0.0.0:9092")]
    listener_url: Url,

    /// Where clients are told to connect, as `tcp://host:port`.
    #[arg(
        long,
        env = "ADVERTISED_LISTENER_URL",
        default_value = "tcp://localhost:9092"
    )]
    advertised_listener_url: Url,

    /// The storage: `memory://tansu/` or `sqlite://path/to/file.db`.
    #[arg(long, env = "STORAGE_ENGINE", default_value = "memory://tansu/")]
    storage_engine: Url,

    /// An OpenTelemetry collector to send the broker's metrics to.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint_url: Option<Url>,

    /// Prints nothing when it starts.
    #[arg(long)]
    silent: bool,

    /// The threads that serve connections and storage (saga patch 11). One by default: the
    /// local run shares two cores with four services, and a second thread cost the broker
    /// more in waking one thread from the other than it gained (PATCHES.md, patch 11).
    #[arg(long, env = "SAGA_BROKER_WORKER_THREADS", default_value = "1")]
    worker_threads: NonZeroUsize,
}

fn main() -> ExitCode {
    let Command::Broker(args) = Cli::parse().command;
    // A multi-threaded runtime even with one worker: libSQL blocks in place
    // (`block_in_place`), which a current-thread runtime refuses.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.get())
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("saga-broker: starting its runtime failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(args))
}

/// Sets up the broker's logs and metrics, then runs it.
async fn serve(args: BrokerArgs) -> ExitCode {
    let _guard = match otel::init(TracingFormat::Text) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("saga-broker: setting up its logs failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    match run(args).await {
        Ok(ErrorCode::None) => {
            debug!("{}", ErrorCode::None);
            ExitCode::SUCCESS
        }
        Ok(error_code) => {
            error!("{error_code}");
            ExitCode::FAILURE
        }
        Err(err) => {
            error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the broker from the options, says where it listens and what it stores in (unless
/// `--silent`), and serves until it is stopped.
async fn run(args: BrokerArgs) -> Result<ErrorCode, tansu_broker::Error> {
    let started = Instant::now();
    if !args.silent {
        println!("saga-broker {}", env!("CARGO_PKG_VERSION"));
        println!(
            "listening on: {} (advertised: {})",
            args.listener_url, args.advertised_listener_url
        );
        println!("storage: {}", without_password(args.storage_engine.clone()));
    }
    Broker::<Controller<StorageContainer>, StorageContainer>::builder()
        .node_id(NODE_ID)
        .cluster_id(args.cluster_id)
        .incarnation_id(Uuid::now_v7())
        .advertised_listener(args.advertised_listener_url)
        .otlp_endpoint_url(args.otlp_endpoint_url)
        .storage(args.storage_engine)
        .listener(args.listener_url)
        .silent(args.silent)
        .build()
        .await?
        .main(started)
        .await
}

/// The storage URL as it may be printed: a password in it is left out.
fn without_password(mut url: Url) -> Url {
    if url.password().is_some() {
        let _ = url.set_password(None);
    }
    url
}
