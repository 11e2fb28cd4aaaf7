//! `shopctl dlq list|replay`: the dead letters of a service, and putting them back once
//! their cause is fixed.

use reqwest::Method;
use serde_json::json;

use crate::Cli;
use crate::api::{Call, call};
use eventing::kafka::KafkaSettings;

/// A service that consumes, and so has a dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consumer {
    OrderService,
    ProductService,
    CouponService,
    AnalyticsForwarder,
}

impl Consumer {
    /// The service's name, as in its consumer group and dead-letter topic.
    pub fn name(self) -> &'static str {
        match self {
            Consumer::OrderService => "order-service",
            Consumer::ProductService => "product-service",
            Consumer::CouponService => "coupon-service",
            Consumer::AnalyticsForwarder => "analytics-forwarder",
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Lists the dead letters of a service, oldest first.
    List {
        /// The service whose dead letters to list.
        service: Consumer,
    },
    /// Publishes dead letters back to the topic they came from, once their cause is fixed.
    /// Safe to repeat: consumers deduplicate by event id.
    Replay {
        /// The service whose dead letters to replay.
        service: Consumer,
        /// Only the dead letter of this event; all of them when absent.
        #[arg(long)]
        event_id: Option<String>,
    },
}

/// Runs `shopctl dlq list|replay`.
pub async fn run(cli: &Cli, command: &DlqCommand) -> anyhow::Result<()> {
    let (service, event_id) = match command {
        DlqCommand::List { service } => (service.name(), None),
        DlqCommand::Replay { service, event_id } => (service.name(), event_id.clone()),
    };
    let settings = cli.kafka();
    let reader = settings.clone();
    let letters =
        tokio::task::spawn_blocking(move || eventing::dlq::list(&reader, service)).await??;
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
                contract::topics::dlq_topic(service)
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
            let Replayed {
                replayed,
                retried,
                undelivered,
            } = replay(&settings, &cli.forwarder_url, cli.admin_token(), chosen).await?;
            println!("replayed {replayed} dead letter(s) of {service} to their topics");
            if undelivered > 0 {
                println!(
                    "made {retried} failed deliveries pending again ({undelivered} dead letter(s))"
                );
            }
        }
    }
    Ok(())
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Dead letters published back to the topic they came from.
    pub replayed: usize,
    /// Failed deliveries the forwarder made pending again.
    pub retried: u64,
    /// Dead letters of deliveries, which are retried rather than republished.
    pub undelivered: usize,
}

/// Puts `letters` back: events the forwarder could not deliver are already consumed, so the
/// forwarder makes their deliveries pending again (`POST /deliveries/retry`); everything else
/// goes back to its topic, where consumers deduplicate it by event id. The retry is an operator
/// endpoint: `admin_token` goes with it.
pub async fn replay(
    settings: &KafkaSettings,
    forwarder_url: &str,
    admin_token: Option<&str>,
    letters: Vec<eventing::dlq::DeadLetter>,
) -> anyhow::Result<Replayed> {
    let (undelivered, unconsumed): (Vec<_>, Vec<_>) = letters
        .into_iter()
        .partition(|l| l.stage == eventing::dlq::STAGE_DELIVER);
    let producer = settings.producer("shopctl")?;
    let replayed = eventing::dlq::replay(&producer, &unconsumed).await?;
    let mut retried = 0;
    for letter in &undelivered {
        let answer = call(Call {
            service: "analytics-forwarder",
            method: Method::POST,
            url: format!("{}/deliveries/retry", forwarder_url.trim_end_matches('/')),
            body: Some(json!({ "event_id": letter.event_id })),
            idempotency_key: None,
            admin_token,
        })
        .await?;
        retried += answer["reset"].as_u64().unwrap_or(0);
    }
    Ok(Replayed {
        replayed,
        retried,
        undelivered: undelivered.len(),
    })
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn every_consuming_service_of_the_contract_has_a_name_here() {
        let names: Vec<&str> = Consumer::value_variants()
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(names, contract::topics::CONSUMING_SERVICES);
    }
}
