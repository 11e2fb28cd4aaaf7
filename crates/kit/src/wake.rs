//! A wake-up signal between tasks of one process: one side says "there is work", the other
//! waits for it. A wake is never lost: one sent while nobody waits is kept for the next wait.
//! Also [`due`], the timer branch of a loop that has something to do at a time only sometimes.

use std::sync::Arc;

use tokio::sync::Notify;

/// A wake-up signal. Cheap to clone; every clone wakes the same waiter.
#[derive(Debug, Clone, Default)]
pub struct Wake {
    notify: Arc<Notify>,
}

impl Wake {
    /// A signal with nobody waiting yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Says there is work. When the work is rows of a transaction, call it after the commit,
    /// not before: a wake before the commit could let the waiter look before the rows are
    /// visible.
    pub fn wake(&self) {
        // `notify_one` keeps a permit when the waiter is busy, so a wake is never lost.
        self.notify.notify_one();
    }

    /// Waits for the next [`Wake::wake`] (or returns at once for one kept meanwhile).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

/// Sleeps until `at`, or forever when there is nothing due: the branch of a `select!` loop for
/// work that is sometimes scheduled and sometimes not.
pub async fn due(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
