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
/// waits through here, most of them through [`retry_until_cancelled`].
pub async fn pause(delay: Duration, shutdown: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// Runs `attempt` until it succeeds, waiting [`delay`] between tries, unless `shutdown` comes
/// first: the value of the first success, or `None` at shutdown. `failed` hears of each
/// failure with the number of the attempt that failed and the wait before the next, to log
/// it or report it.
pub async fn retry_until_cancelled<T, E, F, Fut>(
    shutdown: &tokio_util::sync::CancellationToken,
    mut attempt: F,
    mut failed: impl FnMut(&E, u32, Duration),
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                let wait = delay(attempts);
                failed(&error, attempts, wait);
                if !pause(wait, shutdown).await {
                    return None;
                }
            }
        }
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

    #[tokio::test]
    async fn a_retry_goes_on_until_an_attempt_succeeds_and_reports_each_failure() {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let mut tries = 0;
        let mut reported = Vec::new();
        let value = retry_until_cancelled(
            &shutdown,
            || {
                tries += 1;
                std::future::ready(if tries < 3 { Err(tries) } else { Ok("done") })
            },
            |error, attempt, _| reported.push((*error, attempt)),
        )
        .await;
        assert_eq!(value, Some("done"));
        assert_eq!(reported, [(1, 1), (2, 2)]);
    }

    #[tokio::test]
    async fn a_retry_stops_at_shutdown() {
        let shutdown = tokio_util::sync::CancellationToken::new();
        shutdown.cancel();
        let value: Option<()> =
            retry_until_cancelled(&shutdown, || std::future::ready(Err(())), |_, _, _| {}).await;
        assert_eq!(value, None);
    }
}
