//! The operations CLI of the order saga.
//!
//! - `shopctl topics create`: creates every topic of the contract with its partition count
//!   (dead-letter topics included); topics that exist are left alone.
//! - `shopctl tail <topic>`: prints each message as `key value` (the value is the JSON
//!   envelope), optionally with partition, offset and headers; from the end by default, from
//!   the start with `--from-beginning`. It reads with a throwaway consumer group and commits
//!   nothing, so it never disturbs the services.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eventing::kafka::{KafkaSettings, contract_topics, ensure_topics};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;

/// Operations on the order saga.
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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Topic administration.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
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
    let settings = KafkaSettings::new(&cli.brokers);
    match cli.command {
        Command::Topics {
            command: TopicsCommand::Create,
        } => {
            let topics = contract_topics();
            tokio::time::timeout(Duration::from_secs(30), ensure_topics(&settings, &topics))
                .await
                .with_context(|| format!("no broker answered at {} within 30 s", cli.brokers))?
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
        Command::Tail {
            topic,
            from_beginning,
            headers,
            limit,
        } => tail(&cli.brokers, &topic, from_beginning, headers, limit).await,
    }
}

async fn tail(
    brokers: &str,
    topic: &str,
    from_beginning: bool,
    show_headers: bool,
    limit: Option<usize>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("shopctl-tail-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if from_beginning { "earliest" } else { "latest" },
        )
        .set("fetch.wait.max.ms", "50")
        .create()
        .context("creating a consumer")?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    let mut printed = 0;
    while limit.is_none_or(|limit| printed < limit) {
        let message = consumer
            .recv()
            .await
            .with_context(|| format!("reading {topic} from {brokers}"))?;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default());
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
        if show_headers {
            let headers: Vec<String> = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            format!(
                                "{}={}",
                                h.key,
                                String::from_utf8_lossy(h.value.unwrap_or_default())
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "# partition={} offset={} {}",
                message.partition(),
                message.offset(),
                headers.join(" ")
            );
        }
        println!("{key} {value}");
        printed += 1;
    }
    Ok(())
}
