//! The faults of a chaos run, injected in turn while orders flow: SIGKILL and restart of
//! each service, a broker restart (its storage survives), a database restart (with Postgres
//! and a restart command), and duplicate re-publication of already handled events. All along,
//! the broker is watched: when Tansu's storage fails for good, the broker and every service
//! are restarted ([`Stack::recover_broker`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::bail;
use contract::topics;
use eventing::kafka::KafkaSettings;
use rand::seq::IndexedRandom;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use super::ChaosArgs;
use crate::stack::{Service, Stack, step};

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of a service, then a start of it.
    Kill(Service),
    /// Already handled saga events published again, exactly as they were.
    DuplicateEvents,
    /// The broker stopped and started on the same storage.
    RestartBroker,
    /// The database server restarted, with the command given (Postgres only).
    RestartDatabase,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Kill(service) => write!(f, "kill -9 {service}"),
            Fault::DuplicateEvents => f.write_str("duplicate events"),
            Fault::RestartBroker => f.write_str("restart broker"),
            Fault::RestartDatabase => f.write_str("restart database"),
        }
    }
}

/// The faults, injected in this order, spread evenly over the load.
pub const FAULTS: &[Fault] = &[
    Fault::Kill(Service::OrderService),
    Fault::DuplicateEvents,
    Fault::Kill(Service::ProductService),
    Fault::RestartBroker,
    Fault::Kill(Service::CouponService),
    Fault::RestartDatabase,
    Fault::Kill(Service::AnalyticsForwarder),
    Fault::DuplicateEvents,
];

/// Duplicates published per [`Fault::DuplicateEvents`].
const DUPLICATES: usize = 200;

/// Injects the faults in turn as the load progresses, and keeps watching the broker until
/// `stop`: when Tansu's storage has failed for good, see [`Stack::recover_broker`]. Gives
/// the stack back with what was done.
pub(super) async fn inject_faults(
    mut stack: Stack,
    args: ChaosArgs,
    progress: Arc<AtomicUsize>,
    injected: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> (Stack, Vec<(String, String)>) {
    let mut done = Vec::new();
    let every = (args.orders / (FAULTS.len() + 1)).max(1);
    let mut next = 0;
    while !stop.is_cancelled() {
        if stack.broker_crashed() {
            step("Tansu's storage failed; restarting the broker and every service");
            let result = match stack.recover_broker().await {
                Ok(()) => "restarted the broker and every service".to_owned(),
                Err(error) => format!("failed: {error:#}"),
            };
            done.push(("broker crashed (Tansu)".to_owned(), result));
        }
        if next < FAULTS.len() && progress.load(Ordering::SeqCst) >= every * (next + 1) {
            let fault = FAULTS[next];
            next += 1;
            step(&format!("fault: {fault}"));
            let result = match inject(&mut stack, fault, &args).await {
                Ok(result) => result,
                Err(error) => format!("failed: {error:#}"),
            };
            done.push((fault.to_string(), result));
            injected.fetch_add(1, Ordering::SeqCst);
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    (stack, done)
}

/// Injects one fault; says what came of it.
async fn inject(stack: &mut Stack, fault: Fault, args: &ChaosArgs) -> anyhow::Result<String> {
    match fault {
        Fault::Kill(service) => {
            stack.kill_service(service);
            stack.start_service(service).await?;
            Ok("done".into())
        }
        Fault::RestartBroker => {
            stack.stop_broker().await;
            stack.start_broker().await?;
            Ok("done".into())
        }
        Fault::RestartDatabase => match &args.db_restart_command {
            Some(command) => {
                let status = tokio::process::Command::new("sh")
                    .args(["-c", command])
                    .status()
                    .await?;
                if !status.success() {
                    bail!("`{command}` exited with {status}");
                }
                Ok("done".into())
            }
            None => Ok("skipped (no restart command: SQLite has no server)".into()),
        },
        Fault::DuplicateEvents => {
            let republished = republish(&stack.brokers(), DUPLICATES).await?;
            Ok(format!("done ({republished} events published again)"))
        }
    }
}

/// Publishes up to `most` already published saga events again, exactly as they were.
async fn republish(brokers: &str, most: usize) -> anyhow::Result<usize> {
    let settings = KafkaSettings::new(brokers);
    let reader = settings.clone();
    let saga = [
        topics::ORDER_EVENTS,
        topics::STOCK_EVENTS,
        topics::COUPON_EVENTS,
    ];
    let messages = tokio::task::spawn_blocking(move || {
        ops::read::read_to_end(&reader, &saga, Duration::from_secs(60))
    })
    .await??;
    let sample: Vec<_> = messages
        .choose_multiple(&mut rand::rng(), most)
        .cloned()
        .collect();
    let producer = settings.producer("shopctl-chaos")?;
    for message in &sample {
        let mut record = eventing::kafka::Record::to(message.topic());
        record.key = message.key();
        record.payload = message.payload();
        record.headers = message.headers().cloned();
        producer.send(record, Duration::from_secs(10)).await?;
    }
    Ok(sample.len())
}
