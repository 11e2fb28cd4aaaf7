//! The supervisor of `shopctl up`: what compose's `restart: unless-stopped` does for
//! containers, done for the local processes.
//!
//! Every half second it looks at the stack:
//! - a service that exited is started again, at once the first time and then after a backoff
//!   that doubles up to 30 s while it keeps failing (it resets once the service has stayed up
//!   a minute);
//! - a broker that exited is started again, and so is one whose SQLite storage has failed
//!   (Tansu 0.6.0 then answers every request with an error): then every service is restarted
//!   with it ([`Stack::recover_broker`]).
//!
//! Each restart is announced on the terminal with the reason, and the log folder says more.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::stack::{Service, Stack, step};

/// How often the stack is looked at.
const LOOK: Duration = Duration::from_millis(500);
/// Longest wait before starting a service that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A service that stayed up this long starts over with no backoff.
const STABLE: Duration = Duration::from_secs(60);

/// Restarts of one service in a row, and when it was last started.
#[derive(Debug, Clone, Copy)]
struct Restarts {
    in_a_row: u32,
    started_at: Instant,
}

/// Keeps the stack running until `stop` completes.
pub async fn supervise(stack: &mut Stack, stop: impl std::future::Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut restarts: HashMap<Service, Restarts> = HashMap::new();
    let mut waiting: Vec<(Service, Instant)> = Vec::new();
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(LOOK) => {}
        }
        if let Some(status) = stack.broker_exited() {
            step(&format!(
                "the broker exited ({status}); starting it again with every service"
            ));
            recover(stack).await;
            continue;
        }
        if stack.broker_crashed() {
            step(
                "Tansu's storage failed (see logs/tansu.log); restarting the broker and every service",
            );
            recover(stack).await;
            continue;
        }
        for (name, status) in stack.exited_services() {
            let now = Instant::now();
            let entry = restarts.entry(name).or_insert(Restarts {
                in_a_row: 0,
                started_at: now,
            });
            if now.duration_since(entry.started_at) > STABLE {
                entry.in_a_row = 0;
            }
            let delay = backoff(entry.in_a_row);
            entry.in_a_row += 1;
            step(&format!(
                "{name} exited ({status}); starting it again in {:.0} s (see logs/{name}.log)",
                delay.as_secs_f64()
            ));
            waiting.push((name, now + delay));
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|(_, at)| *at <= now);
        waiting = later;
        for (name, _) in due {
            if let Some(entry) = restarts.get_mut(&name) {
                entry.started_at = Instant::now();
            }
            if let Err(error) = stack.start_service(name).await {
                step(&format!("{name} did not come back: {error:#}"));
            }
        }
    }
}

async fn recover(stack: &mut Stack) {
    match stack.recover_broker().await {
        Ok(()) => step("the broker and every service are back"),
        Err(error) => step(&format!(
            "recovering the broker failed: {error:#}; trying again"
        )),
    }
}

/// No wait the first time, then 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`].
fn backoff(in_a_row: u32) -> Duration {
    if in_a_row == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (in_a_row - 1).min(5)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_failing_again_and_again_waits_longer_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }
}
