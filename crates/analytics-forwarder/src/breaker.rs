//! A circuit breaker for the data platform: after enough failures in a row it stops sending
//! for a cool-down, then lets one delivery through as a probe. A dead data platform is then
//! asked once per cool-down instead of once per pending event. Pure logic: the caller passes
//! the time.

use std::time::{Duration, Instant};

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Deliveries flow.
    Closed,
    /// Nothing is sent until the instant.
    Open { until: Instant },
    /// One probe may go; its outcome closes or reopens the breaker.
    HalfOpen,
}

/// The breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    max_cooldown: Duration,
    failures: u32,
    opened: u32,
    state: State,
}

impl Breaker {
    /// Opens after `threshold` failures in a row, for `cooldown`, doubling each time it
    /// reopens without a success in between, up to `max_cooldown`.
    pub fn new(threshold: u32, cooldown: Duration, max_cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            max_cooldown: max_cooldown.max(cooldown),
            failures: 0,
            opened: 0,
            state: State::Closed,
        }
    }

    /// How many deliveries may go now: all of `wanted` when closed, one probe when the
    /// cool-down is over, none while open.
    pub fn allowed(&mut self, wanted: usize, now: Instant) -> usize {
        match self.state {
            State::Closed => wanted,
            State::Open { until } if now < until => 0,
            State::Open { .. } | State::HalfOpen => {
                self.state = State::HalfOpen;
                wanted.min(1)
            }
        }
    }

    /// A delivery succeeded: close.
    pub fn success(&mut self) {
        self.failures = 0;
        self.opened = 0;
        self.state = State::Closed;
    }

    /// A delivery failed in a way worth retrying: count it, and open when there were enough
    /// in a row (at once, if it was the probe). `true` when this failure opened the breaker.
    pub fn failure(&mut self, now: Instant) -> bool {
        self.failures += 1;
        let trip = self.state == State::HalfOpen
            || (self.state == State::Closed && self.failures >= self.threshold);
        if trip {
            let factor = 1u32 << self.opened.min(16);
            let cooldown = self.cooldown.saturating_mul(factor).min(self.max_cooldown);
            self.opened += 1;
            self.state = State::Open {
                until: now + cooldown,
            };
        }
        trip
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(3, Duration::from_secs(1), Duration::from_secs(4))
    }

    #[test]
    fn it_opens_after_enough_failures_in_a_row() {
        let now = Instant::now();
        let mut b = breaker();
        assert!(!b.failure(now));
        assert!(!b.failure(now));
        b.success();
        assert!(!b.failure(now));
        assert!(!b.failure(now));
        assert!(b.failure(now));
        assert_eq!(b.allowed(10, now), 0);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_decides() {
        let now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(now);
        }
        let later = now + Duration::from_secs(1);
        assert_eq!(b.allowed(10, later), 1);
        assert_eq!(b.state(), State::HalfOpen);
        b.success();
        assert_eq!(b.allowed(10, later), 10);
    }

    #[test]
    fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
        let now = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(now);
        }
        let mut at = now;
        let mut cooldowns = Vec::new();
        for _ in 0..4 {
            let State::Open { until } = b.state() else {
                panic!("open")
            };
            cooldowns.push(until - at);
            at = until;
            assert_eq!(b.allowed(5, at), 1);
            assert!(b.failure(at));
        }
        assert_eq!(cooldowns, [1, 2, 4, 4].map(Duration::from_secs));
    }
}
