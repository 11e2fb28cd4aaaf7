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
    /// The contract's service.
    pub fn service(self) -> contract::Service {
        match self {
            Consumer::OrderService => contract::Service::OrderService,
            Consumer::ProductService => contract::Service::ProductService,
            Consumer::CouponService => contract::Service::CouponService,
            Consumer::AnalyticsForwarder => contract::Service::AnalyticsForwarder,
        }
    }

    /// The service's name, as in its consumer group and dead-letter topic.
    pub fn name(self) -> &'static str {
        self.service().name()
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Lists the dead letters of a service, oldest first, with whether each was replayed.
    List {
        /// The service whose dead letters to list.
        service: Consumer,
    },
    /// Shows one dead letter in full: headers, key and value, as text.
    Show {
        /// The service whose dead letter to show.
        service: Consumer,
        /// Its offset in the dead-letter topic (the first column of `list`).
        offset: i64,
    },
    /// Puts dead letters back once their cause is fixed: a message its consumer could not
    /// process goes back to the topic it came from, a failed delivery is retried by the
    /// forwarder. A letter goes back only to a topic its service consumes, and only if that
    /// topic still holds the same message at the offset the letter names. Safe to repeat:
    /// consumers deduplicate by event id.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["offset", "event_id", "all"])))]
    Replay {
        /// The service whose dead letters to replay.
        service: Consumer,
        /// The dead letter at this offset of the dead-letter topic.
        #[arg(long)]
        offset: Option<i64>,
        /// The dead letter of this event.
        #[arg(long)]
        event_id: Option<String>,
        /// Every dead letter not replayed before.
        #[arg(long)]
        all: bool,
    },
}

/// Which dead letters a replay is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Offset(i64),
    EventId(String),
    /// Every letter not replayed yet.
    AllNotReplayed,
}

impl Choice {
    /// The letters chosen; an error when one was named and is not there.
    pub fn pick(
        &self,
        service: &str,
        letters: Vec<ops::dlq::DeadLetter>,
    ) -> anyhow::Result<Vec<ops::dlq::DeadLetter>> {
        let chosen: Vec<_> = letters
            .into_iter()
            .filter(|l| match self {
                Choice::Offset(offset) => l.offset == *offset,
                Choice::EventId(id) => l.event_id.as_deref() == Some(id.as_str()),
                Choice::AllNotReplayed => l.replayed_at.is_none(),
            })
            .collect();
        match self {
            Choice::Offset(offset) if chosen.is_empty() => {
                anyhow::bail!("{service} has no dead letter at offset {offset}")
            }
            Choice::EventId(id) if chosen.is_empty() => {
                anyhow::bail!("no dead letter of {service} has event id {id}")
            }
            _ => Ok(chosen),
        }
    }
}

/// Runs `shopctl dlq list|show|replay`.
pub async fn run(cli: &Cli, command: &DlqCommand) -> anyhow::Result<()> {
    let service = match command {
        DlqCommand::List { service }
        | DlqCommand::Show { service, .. }
        | DlqCommand::Replay { service, .. } => service.name(),
    };
    let settings = cli.kafka();
    let reader = settings.clone();
    let letters = tokio::task::spawn_blocking(move || ops::dlq::list(&reader, service)).await??;
    match command {
        DlqCommand::List { .. } => {
            println!(
                "{:<7} {:<25} {:<20} {:<24} {:<38} {:<9} error",
                "offset", "failed_at", "source", "event_type", "event_id", "replayed"
            );
            for l in &letters {
                let source = format!(
                    "{}/{}@{}",
                    l.source_topic, l.source_partition, l.source_offset
                );
                println!(
                    "{:<7} {:<25} {:<20} {:<24} {:<38} {:<9} {}",
                    l.offset,
                    l.failed_at,
                    source,
                    l.event_type.as_deref().unwrap_or("-"),
                    l.event_id.as_deref().unwrap_or("-"),
                    if l.replayed_at.is_some() { "yes" } else { "no" },
                    l.error.escape_debug()
                );
            }
            println!(
                "{} dead letter(s) in {}",
                letters.len(),
                contract::topics::dlq_topic(service)
            );
        }
        DlqCommand::Show { offset, .. } => {
            let letter = Choice::Offset(*offset).pick(service, letters)?.remove(0);
            print!("{}", describe(&letter));
        }
        DlqCommand::Replay {
            offset,
            event_id,
            all,
            ..
        } => {
            let choice = match (offset, event_id, all) {
                (Some(offset), _, _) => Choice::Offset(*offset),
                (_, Some(id), _) => Choice::EventId(id.clone()),
                _ => Choice::AllNotReplayed,
            };
            let chosen = choice.pick(service, letters)?;
            let done = replay(
                &settings,
                &cli.forwarder_url,
                cli.admin_token(),
                service,
                chosen,
            )
            .await?;
            println!(
                "replayed {} dead letter(s) of {service} to their topics",
                done.replayed
            );
            if done.undelivered > 0 {
                println!(
                    "made {} failed deliveries pending again ({} dead letter(s))",
                    done.retried, done.undelivered
                );
            }
            for (offset, reason) in &done.refused {
                println!("refused the dead letter at offset {offset}: {reason}");
            }
            if !done.refused.is_empty() {
                anyhow::bail!("{} dead letter(s) were not replayed", done.refused.len());
            }
        }
    }
    Ok(())
}

/// One dead letter in full, as text: every value escaped, so that nothing in it can act on
/// the terminal.
pub fn describe(letter: &ops::dlq::DeadLetter) -> String {
    let field = |name: &str, value: Option<&str>| {
        format!("{name:<16} {}\n", value.unwrap_or("-").escape_debug())
    };
    let source = format!(
        "{}/{}@{}",
        letter.source_topic, letter.source_partition, letter.source_offset
    );
    [
        field("offset", Some(&letter.offset.to_string())),
        field("event_type", letter.event_type.as_deref()),
        field("event_id", letter.event_id.as_deref()),
        field("key", letter.key.as_deref()),
        field("source", Some(&source)),
        field("stage", Some(&letter.stage_header)),
        field("failed_at", Some(&letter.failed_at)),
        field("replayed_at", letter.replayed_at.as_deref()),
        field("error", Some(&letter.error)),
        field("payload", letter.payload.as_deref()),
    ]
    .concat()
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replayed {
    /// Dead letters published back to the topic they came from.
    pub replayed: usize,
    /// Failed deliveries the forwarder made pending again.
    pub retried: u64,
    /// Dead letters of deliveries, which are retried rather than republished.
    pub undelivered: usize,
    /// Dead letters not put back, by offset, and why.
    pub refused: Vec<(i64, String)>,
}

/// Puts `letters` of `service` back: events the forwarder could not deliver are already
/// consumed, so the forwarder makes their deliveries pending again (`POST /deliveries/retry`);
/// everything else goes back to its topic where [`ops::dlq::replay`] allows it, and
/// consumers deduplicate it by event id. Each letter put back is recorded as replayed. The
/// retry is an operator endpoint: `admin_token` goes with it.
pub async fn replay(
    settings: &KafkaSettings,
    forwarder_url: &str,
    admin_token: Option<&str>,
    service: &str,
    letters: Vec<ops::dlq::DeadLetter>,
) -> anyhow::Result<Replayed> {
    let (undelivered, unconsumed): (Vec<_>, Vec<_>) = letters
        .into_iter()
        .partition(|l| l.stage() == Some(eventing::dlq::Stage::Deliver));
    let producer = settings.producer("shopctl")?;
    let mut done = Replayed {
        undelivered: undelivered.len(),
        ..Replayed::default()
    };
    let outcomes = ops::dlq::replay(settings, &producer, service, &unconsumed).await?;
    for (letter, outcome) in unconsumed.iter().zip(outcomes) {
        match outcome {
            ops::dlq::Replayed::Republished { .. } => done.replayed += 1,
            ops::dlq::Replayed::Refused(reason) => done.refused.push((letter.offset, reason)),
        }
    }
    for letter in &undelivered {
        let answer = call(Call {
            service: contract::Service::AnalyticsForwarder.name(),
            method: Method::POST,
            url: format!("{}/deliveries/retry", forwarder_url.trim_end_matches('/')),
            body: Some(json!({ "event_id": letter.event_id })),
            idempotency_key: None,
            admin_token,
        })
        .await?;
        done.retried += answer["reset"].as_u64().unwrap_or(0);
        ops::dlq::mark_replayed(&producer, service, letter).await?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn every_consuming_service_of_the_contract_has_a_name_here() {
        let services: Vec<contract::Service> = Consumer::value_variants()
            .iter()
            .map(|c| c.service())
            .collect();
        assert_eq!(services, contract::Service::ALL);
        // clap spells each variant as the service is named.
        for consumer in Consumer::value_variants() {
            let value = consumer.to_possible_value().expect("a value");
            assert_eq!(value.get_name(), consumer.name());
        }
    }
}
