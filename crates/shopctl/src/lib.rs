//! `shopctl`, the command line of the order saga.
//!
//! - [`up`]: `shopctl up` runs the whole system locally, as a [`stack::Stack`] of processes
//!   kept running by [`supervise`].
//! - [`kafka`]: `shopctl tail` follows a topic; reading topics to their end for `trace`.
//! - [`trace`]: `shopctl trace <order-id>` shows one order's events across every saga topic.
//! - [`api`]: `shopctl order|product|coupon …` call the services' HTTP APIs.
//! - [`dlq`]: `shopctl dlq list|replay`, the dead letters of a service.
//! - [`console`]: `shopctl console`, the live web page of the saga (port 8088).
//! - [`chaos`]: `shopctl chaos` runs a load under injected faults and checks the invariants.
//! - [`bench`]: `shopctl bench` measures latency, throughput and cost under an open-loop load;
//!   `shopctl plot` draws its reports.
//! - `shopctl topics create|list` creates or lists the contract's topics.
//!
//! Everything that reads topics uses a consumer group of its own and commits nothing, so it
//! never disturbs the services. It works against Tansu and against Apache Kafka.

pub mod api;
pub mod bench;
pub mod chaos;
pub mod console;
pub mod dlq;
pub mod kafka;
pub mod progress;
pub mod stack;
pub mod supervise;
pub mod trace;
pub mod up;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eventing::kafka::KafkaSettings;
use ops::topics::{contract_topics, ensure_topics};

/// The order saga's command line.
#[derive(Debug, Parser)]
#[command(name = "shopctl", version, about)]
pub struct Cli {
    /// Comma-separated `host:port` list of brokers.
    #[arg(
        long,
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub brokers: String,
    /// Base URL of the order service.
    #[arg(
        long,
        env = "ORDER_SERVICE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub order_url: String,
    /// Base URL of the product service.
    #[arg(
        long,
        env = "PRODUCT_SERVICE_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub product_url: String,
    /// Base URL of the coupon service.
    #[arg(
        long,
        env = "COUPON_SERVICE_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    pub coupon_url: String,
    /// Base URL of the analytics forwarder.
    #[arg(
        long,
        env = "ANALYTICS_FORWARDER_URL",
        default_value = "http://127.0.0.1:8083",
        global = true
    )]
    pub forwarder_url: String,
    /// The admin token operator endpoints need (restock, delivery retry): `ADMIN_TOKEN`, or
    /// else the one `shopctl up` keeps in `.local/admin-token`, when that file exists.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,
    /// How to authenticate to the brokers (`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`,
    /// `KAFKA_SSL_CA_FILE`), as the services do.
    #[command(flatten)]
    pub kafka_security: eventing::kafka::KafkaSecurity,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The settings `shopctl`'s own readers and producers reach the brokers with.
    pub fn kafka(&self) -> KafkaSettings {
        let mut settings = KafkaSettings::new(&self.brokers);
        settings.security = self.kafka_security.clone();
        settings
    }

    /// [`Cli::admin_token`], or the token of the local stack in the default data folder.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref().or_else(|| {
            static LOCAL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
            LOCAL
                .get_or_init(|| stack::read_admin_token(std::path::Path::new(".local")))
                .as_deref()
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the whole system locally: Tansu (or Apache Kafka), every service on SQLite, the
    /// data-platform mock.
    Up(up::UpArgs),
    /// Serves the saga console: a live web page of orders, their timelines, the services'
    /// health, lag, backlog and breaker, and dead letters with replay.
    Console(console::ConsoleArgs),
    /// Places orders against a local stack while injecting faults, then checks the invariants.
    Chaos(chaos::ChaosArgs),
    /// Sends orders at a fixed rate to a running system and measures latency, throughput,
    /// CPU per order and memory.
    Bench(bench::BenchArgs),
    /// Draws SVG plots (latency against rate, latency distribution) from `shopctl bench`
    /// JSON reports.
    Plot(bench::plot::PlotArgs),
    /// Follows a topic and prints every message as `key value`.
    Tail {
        /// The topic, such as `order.events`.
        topic: String,
        /// Start from the oldest message instead of the newest.
        #[arg(long)]
        from_beginning: bool,
        /// Also print partition, offset and headers before each message.
        #[arg(long)]
        headers: bool,
        /// Stop after this many messages.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Every event of one order across all saga topics, in time order.
    Trace {
        /// The order id.
        order_id: String,
    },
    /// Topic administration.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Dead letters: messages a service could never process.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Orders, over the order service's API.
    Order {
        #[command(subcommand)]
        command: api::OrderCommand,
    },
    /// Products, over the product service's API.
    Product {
        #[command(subcommand)]
        command: api::ProductCommand,
    },
    /// Coupons, over the coupon service's API.
    Coupon {
        #[command(subcommand)]
        command: api::CouponCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Creates every topic of the contract that does not exist yet.
    Create,
    /// Lists the topics of the contract with their partition counts.
    List,
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::up(args).await,
        Command::Chaos(args) => chaos::chaos(args).await,
        Command::Console(ref args) => console::run(&cli, args).await,
        Command::Bench(ref args) => bench::bench(&cli, args).await,
        Command::Plot(ref args) => {
            for file in bench::plot::plot(args)? {
                println!("{}", file.display());
            }
            Ok(())
        }
        Command::Tail {
            ref topic,
            from_beginning,
            headers,
            limit,
        } => kafka::tail(&cli.kafka(), topic, from_beginning, headers, limit).await,
        Command::Trace { ref order_id } => {
            let (kafka, id) = (cli.kafka(), order_id.clone());
            let steps = tokio::task::spawn_blocking(move || trace::collect(&kafka, &id)).await??;
            trace::print(order_id, &steps);
            Ok(())
        }
        Command::Topics {
            command: TopicsCommand::Create,
        } => {
            let topics = contract_topics();
            tokio::time::timeout(
                Duration::from_secs(30),
                ensure_topics(&cli.kafka(), &topics),
            )
            .await
            .with_context(|| format!("no Kafka broker answered at {} within 30 s", cli.brokers))?
            .with_context(|| format!("creating topics at {}", cli.brokers))?;
            for (name, partitions, _) in topics {
                println!("{name} ({partitions} partitions)");
            }
            Ok(())
        }
        Command::Topics {
            command: TopicsCommand::List,
        } => {
            for (name, partitions, compacted) in contract_topics() {
                let policy = if compacted { "compact" } else { "delete" };
                println!("{name}\t{partitions}\t{policy}");
            }
            Ok(())
        }
        Command::Dlq { ref command } => dlq::run(&cli, command).await,
        Command::Order { ref command } => api::order(&cli, command).await,
        Command::Product { ref command } => api::product(&cli, command).await,
        Command::Coupon { ref command } => api::coupon(&cli, command).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
