//! `shopctl`, the command line of the order saga.
//!
//! - [`up`]: `shopctl up` runs the whole system locally, as a [`stack::Stack`] of processes
//!   kept running by [`supervise`].
//! - [`kafka`]: `shopctl tail` follows a topic; reading topics to their end for `trace`.
//! - [`trace`]: `shopctl trace <order-id>` shows one order's events across every saga topic.
//! - [`api`]: `shopctl order|product|coupon …` call the services' HTTP APIs.
//! - [`chaos`]: `shopctl chaos` runs a load under injected faults and checks the invariants.
//! - `shopctl topics create|list` creates or lists the contract's topics.
//!
//! Everything that reads topics uses a consumer group of its own and commits nothing, so it
//! never disturbs the services. It works against Tansu and against Apache Kafka.

pub mod api;
pub mod chaos;
pub mod kafka;
pub mod stack;
pub mod supervise;
pub mod trace;
pub mod up;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eventing::kafka::{KafkaSettings, contract_topics, ensure_topics};
use reqwest::Method;
use serde_json::{Value, json};

use crate::api::{Call, call};

/// How long `order place --wait` waits for an order to leave PENDING.
const WAIT_FOR_ORDER: Duration = Duration::from_secs(60);

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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the whole system locally: Tansu, every service on SQLite, the data-platform mock.
    Up(up::UpArgs),
    /// Places orders against a local stack while injecting faults, then checks the invariants.
    Chaos(chaos::ChaosArgs),
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
        command: DlqCommand,
    },
    /// Orders, over the order service's API.
    Order {
        #[command(subcommand)]
        command: OrderCommand,
    },
    /// Products, over the product service's API.
    Product {
        #[command(subcommand)]
        command: ProductCommand,
    },
    /// Coupons, over the coupon service's API.
    Coupon {
        #[command(subcommand)]
        command: CouponCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Creates every topic of the contract that does not exist yet.
    Create,
    /// Lists the topics of the contract with their partition counts.
    List,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Lists the dead letters of a service, oldest first.
    List {
        /// order-service, product-service, coupon-service or analytics-forwarder.
        service: String,
    },
    /// Publishes dead letters back to the topic they came from, once their cause is fixed.
    /// Safe to repeat: consumers deduplicate by event id.
    Replay {
        service: String,
        /// Only the dead letter of this event; all of them when absent.
        #[arg(long)]
        event_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Places an order.
    Place {
        #[arg(long)]
        user: i64,
        /// `PRODUCT_ID:QUANTITY`; repeat for more lines.
        #[arg(long = "item", required = true, value_parser = api::parse_item)]
        items: Vec<(i64, i64)>,
        #[arg(long)]
        coupon: Option<i64>,
        /// Makes the request safe to repeat.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait until the order is CONFIRMED or CANCELLED and print it then; fail (status 1)
        /// if it is still PENDING after 60 s.
        #[arg(long)]
        wait: bool,
    },
    /// Shows an order.
    Get { id: String },
    /// Cancels an order.
    Cancel { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Creates a product.
    Create {
        #[arg(long)]
        name: String,
        /// Minor units.
        #[arg(long)]
        price: i64,
        #[arg(long)]
        stock: i64,
    },
    /// Shows a product with its available and reserved stock.
    Get { id: i64 },
    /// Adds stock.
    Restock {
        id: i64,
        #[arg(long)]
        quantity: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum CouponCommand {
    /// Creates a coupon.
    Create {
        #[arg(long)]
        user: i64,
        /// FIXED or PERCENT.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        value: i64,
        /// RFC 3339, such as 2026-12-31T23:59:59Z.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Shows a coupon.
    Get { id: i64 },
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::up(args).await,
        Command::Chaos(args) => chaos::chaos(args).await,
        Command::Tail {
            ref topic,
            from_beginning,
            headers,
            limit,
        } => kafka::tail(&cli.brokers, topic, from_beginning, headers, limit).await,
        Command::Trace { ref order_id } => {
            let (brokers, id) = (cli.brokers.clone(), order_id.clone());
            let steps =
                tokio::task::spawn_blocking(move || trace::collect(&brokers, &id)).await??;
            trace::print(order_id, &steps);
            Ok(())
        }
        Command::Topics {
            command: TopicsCommand::Create,
        } => {
            let topics = contract_topics();
            tokio::time::timeout(
                Duration::from_secs(30),
                ensure_topics(&KafkaSettings::new(&cli.brokers), &topics),
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
        Command::Dlq { ref command } => dlq(&cli, command).await,
        Command::Order { ref command } => order(&cli, command).await,
        Command::Product { ref command } => product(&cli, command).await,
        Command::Coupon { ref command } => coupon(&cli, command).await,
    }
}

async fn dlq(cli: &Cli, command: &DlqCommand) -> anyhow::Result<()> {
    let (service, event_id) = match command {
        DlqCommand::List { service } => (service.clone(), None),
        DlqCommand::Replay { service, event_id } => (service.clone(), event_id.clone()),
    };
    if !contract::topics::CONSUMING_SERVICES.contains(&service.as_str()) {
        anyhow::bail!(
            "{service} has no dead-letter topic; one of: {}",
            contract::topics::CONSUMING_SERVICES.join(", ")
        );
    }
    let settings = KafkaSettings::new(&cli.brokers);
    let reader = settings.clone();
    let listed = service.clone();
    let letters =
        tokio::task::spawn_blocking(move || eventing::dlq::list(&reader, &listed)).await??;
    match command {
        DlqCommand::List { .. } => {
            println!(
                "{:<7} {:<25} {:<20} {:<24} {:<38} error",
                "offset", "failed_at", "source", "event_type", "event_id"
            );
            for l in &letters {
                let source = format!(
                    "{}/{}@{}",
                    l.source_topic, l.source_partition, l.source_offset
                );
                println!(
                    "{:<7} {:<25} {:<20} {:<24} {:<38} {}",
                    l.offset,
                    l.failed_at,
                    source,
                    l.event_type.as_deref().unwrap_or("-"),
                    l.event_id.as_deref().unwrap_or("-"),
                    l.error
                );
            }
            println!(
                "{} dead letter(s) in {}",
                letters.len(),
                contract::topics::dlq_topic(&service)
            );
        }
        DlqCommand::Replay { .. } => {
            let chosen: Vec<_> = letters
                .into_iter()
                .filter(|l| event_id.is_none() || l.event_id == event_id)
                .collect();
            if event_id.is_some() && chosen.is_empty() {
                anyhow::bail!("no dead letter of {service} has that event id");
            }
            // Events the forwarder could not deliver are already consumed: the forwarder makes
            // their deliveries pending again. Everything else goes back to its topic.
            let (undelivered, unconsumed): (Vec<_>, Vec<_>) = chosen
                .into_iter()
                .partition(|l| l.stage == eventing::dlq::STAGE_DELIVER);
            let producer = settings.producer("shopctl")?;
            let replayed = eventing::dlq::replay(&producer, &unconsumed).await?;
            let mut retried = 0;
            for letter in &undelivered {
                let answer = call(Call {
                    service: "analytics-forwarder",
                    method: Method::POST,
                    url: format!(
                        "{}/deliveries/retry",
                        cli.forwarder_url.trim_end_matches('/')
                    ),
                    body: Some(json!({ "event_id": letter.event_id })),
                    idempotency_key: None,
                })
                .await?;
                retried += answer["reset"].as_u64().unwrap_or(0);
            }
            println!("replayed {replayed} dead letter(s) of {service} to their topics");
            if !undelivered.is_empty() {
                println!(
                    "made {retried} failed deliveries pending again ({} dead letter(s))",
                    undelivered.len()
                );
            }
        }
    }
    Ok(())
}

fn show(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn order(cli: &Cli, command: &OrderCommand) -> anyhow::Result<()> {
    let base = cli.order_url.trim_end_matches('/');
    let get = |id: &str| Call {
        service: "order-service",
        method: Method::GET,
        url: format!("{base}/orders/{id}"),
        body: None,
        idempotency_key: None,
    };
    let answer = match command {
        OrderCommand::Place {
            user,
            items,
            coupon,
            idempotency_key,
            wait,
        } => {
            let items: Vec<Value> = items
                .iter()
                .map(|(p, q)| json!({ "product_id": p, "quantity": q }))
                .collect();
            let mut body = json!({ "user_id": user, "items": items });
            if let Some(coupon) = coupon {
                body["coupon_id"] = json!(coupon);
            }
            let placed = call(Call {
                service: "order-service",
                method: Method::POST,
                url: format!("{base}/orders"),
                body: Some(body),
                idempotency_key: idempotency_key.as_deref(),
            })
            .await?;
            if *wait {
                let id = placed["order_id"]
                    .as_str()
                    .context("the order service answered without an order_id")?
                    .to_owned();
                let deadline = std::time::Instant::now() + WAIT_FOR_ORDER;
                loop {
                    let order = call(get(&id)).await?;
                    if order["status"] != "PENDING" {
                        break order;
                    }
                    if std::time::Instant::now() > deadline {
                        println!("{}", serde_json::to_string_pretty(&order)?);
                        anyhow::bail!(
                            "order {id} is still PENDING after {} s; is every service up? (see /health/ready of each)",
                            WAIT_FOR_ORDER.as_secs()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } else {
                placed
            }
        }
        OrderCommand::Get { id } => call(get(id)).await?,
        OrderCommand::Cancel { id } => {
            call(Call {
                service: "order-service",
                method: Method::POST,
                url: format!("{base}/orders/{id}/cancel"),
                body: None,
                idempotency_key: None,
            })
            .await?
        }
    };
    show(&answer);
    Ok(())
}

async fn product(cli: &Cli, command: &ProductCommand) -> anyhow::Result<()> {
    let base = cli.product_url.trim_end_matches('/');
    let (method, url, body) = match command {
        ProductCommand::Create { name, price, stock } => (
            Method::POST,
            format!("{base}/products"),
            Some(json!({ "name": name, "price": price, "stock": stock })),
        ),
        ProductCommand::Get { id } => (Method::GET, format!("{base}/products/{id}"), None),
        ProductCommand::Restock { id, quantity } => (
            Method::POST,
            format!("{base}/products/{id}/restock"),
            Some(json!({ "quantity": quantity })),
        ),
    };
    show(
        &call(Call {
            service: "product-service",
            method,
            url,
            body,
            idempotency_key: None,
        })
        .await?,
    );
    Ok(())
}

async fn coupon(cli: &Cli, command: &CouponCommand) -> anyhow::Result<()> {
    let base = cli.coupon_url.trim_end_matches('/');
    let (method, url, body) = match command {
        CouponCommand::Create {
            user,
            kind,
            value,
            expires_at,
        } => {
            let mut body = json!({ "user_id": user, "kind": kind, "value": value });
            if let Some(expires_at) = expires_at {
                body["expires_at"] = json!(expires_at);
            }
            (Method::POST, format!("{base}/coupons"), Some(body))
        }
        CouponCommand::Get { id } => (Method::GET, format!("{base}/coupons/{id}"), None),
    };
    show(
        &call(Call {
            service: "coupon-service",
            method,
            url,
            body,
            idempotency_key: None,
        })
        .await?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
