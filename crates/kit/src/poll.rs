//! Waiting for something to happen by asking again and again: the one poll loop of the
//! workspace, async ([`until`]) and blocking ([`until_blocking`]), and its form for attempts
//! that fail with a reason ([`retry`]), that tests, `shopctl` and the services' tools use
//! instead of writing their own.

use std::future::Future;
use std::time::{Duration, Instant};

/// What did not happen in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} did not happen within {within:?}")]
pub struct TimedOut {
    pub what: String,
    pub within: Duration,
}

/// Calls `probe` every `every` until it returns `Some`, and returns that; fails once `within`
/// has passed. The probe is always called at least once.
pub async fn until<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                within,
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// Calls `attempt` every `every` until it succeeds, and returns its value; once `within` has
/// passed, returns the last attempt's error, which says more than "it timed out". The
/// attempt is always made at least once.
pub async fn retry<T, E, F, Fut>(within: Duration, every: Duration, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// [`until`] for code that is not async: the thread sleeps between calls.
pub fn until_blocking<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, TimedOut> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                within,
            });
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_returns_the_first_answer_or_says_what_did_not_happen() {
        let mut calls = 0;
        let found = until(
            "three calls",
            Duration::from_secs(1),
            Duration::ZERO,
            || {
                calls += 1;
                let done = calls == 3;
                async move { done.then_some(calls) }
            },
        )
        .await;
        assert_eq!(found, Ok(3));
        let never = until(
            "never",
            Duration::from_millis(20),
            Duration::from_millis(5),
            || async { None::<()> },
        )
        .await;
        assert_eq!(
            never.unwrap_err().to_string(),
            "never did not happen within 20ms"
        );
        assert_eq!(
            until_blocking("at once", Duration::ZERO, Duration::ZERO, || Some(1)),
            Ok(1)
        );
    }

    #[tokio::test]
    async fn a_retry_returns_the_first_success_or_the_last_error() {
        let mut calls = 0;
        let found: Result<u32, String> = retry(Duration::from_secs(1), Duration::ZERO, || {
            calls += 1;
            let outcome = if calls == 2 {
                Ok(calls)
            } else {
                Err(format!("try {calls}"))
            };
            async move { outcome }
        })
        .await;
        assert_eq!(found, Ok(2));

        let mut calls = 0;
        let failed: Result<(), String> =
            retry(Duration::from_millis(30), Duration::from_millis(10), || {
                calls += 1;
                let outcome = Err(format!("try {calls}"));
                async move { outcome }
            })
            .await;
        assert_eq!(failed, Err(format!("try {calls}")));
        assert!(calls >= 2);
    }
}
