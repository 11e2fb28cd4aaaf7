//! Exponential backoff with "equal jitter" (half the delay fixed, half random), shared by
//! every retry loop: it never retries sooner than half the exponential delay, and failing
//! workers still spread out.

use std::time::Duration;

use rand::Rng;

/// The first retry waits up to this long.
const BASE: Duration = Duration::from_millis(100);
/// No retry waits longer than this.
const CAP: Duration = Duration::from_secs(5);

/// How long to wait before retry number `attempt` (1 for the first retry): a random time
/// between half of `min(CAP, BASE · 2^(attempt-1))` and all of it, so that many failing
/// workers do not retry in step.
pub fn delay(attempt: u32) -> Duration {
    delay_between(attempt, BASE, CAP)
}

/// [`delay`] with another base and cap.
pub fn delay_between(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1u32 << exponent).min(cap);
    let half = ceiling / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// Waits `delay` before a retry, unless `shutdown` comes first: `true` when the wait is over
/// and the retry is due, `false` at shutdown. Every "retry with backoff until shutdown" loop
/// waits through here.
pub async fn pause(delay: Duration, shutdown: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stop_at_the_cap() {
        for attempt in 1..40 {
            let d = delay(attempt);
            let ceiling = BASE.saturating_mul(1 << (attempt - 1).min(20)).min(CAP);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
        assert!(delay(30) >= CAP / 2);
    }
}
