// Added to Tansu 0.6.0 by saga-broker (saga patch 7), under Tansu's license:
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! saga patch 7 (PATCHES.md): fetches that wait for records without polling storage.
//!
//! A fetch that found too little registers a [`Waiter`] on the partitions it asks for and
//! sleeps until a produce lands on one of them ([`landed`]) or its wait runs out. It
//! registers before its first look at storage, and a [`tokio::sync::Notify`] keeps a wake-up
//! that arrives while nobody awaits it, so a produce that lands between the look and the
//! sleep is never missed.
//!
//! The broker is one process, so one table of waiters serves every connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The fetches waiting, by topic name, then partition, then waiter.
type Waiting = HashMap<String, HashMap<i32, HashMap<u64, Arc<Notify>>>>;

static WAITING: LazyLock<Mutex<Waiting>> = LazyLock::new(Mutex::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn waiting() -> MutexGuard<'static, Waiting> {
    // The table holds only wake-ups; one left by a panicking thread is still sound.
    WAITING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Wakes every fetch waiting on `partition` of `topic`: call it once a produce to it is
/// stored.
pub(crate) fn landed(topic: &str, partition: i32) {
    if let Some(waiters) = waiting()
        .get(topic)
        .and_then(|partitions| partitions.get(&partition))
    {
        for notify in waiters.values() {
            notify.notify_one();
        }
    }
}

/// One fetch's registration on its partitions, removed when dropped.
pub(crate) struct Waiter {
    id: u64,
    partitions: Vec<(String, i32)>,
    notify: Arc<Notify>,
}

impl Waiter {
    /// Registers a fetch of `partitions`, as (topic name, partition index).
    pub(crate) fn on(partitions: Vec<(String, i32)>) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let mut table = waiting();
        for (topic, partition) in &partitions {
            table
                .entry(topic.clone())
                .or_default()
                .entry(*partition)
                .or_default()
                .insert(id, notify.clone());
        }
        Waiter {
            id,
            partitions,
            notify,
        }
    }

    /// Resolves once a produce has landed on one of the partitions since the registration or
    /// the last wake-up.
    pub(crate) async fn produced(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut table = waiting();
        for (topic, partition) in &self.partitions {
            let Some(partitions) = table.get_mut(topic) else {
                continue;
            };
            if let Some(waiters) = partitions.get_mut(partition) {
                waiters.remove(&self.id);
                if waiters.is_empty() {
                    partitions.remove(partition);
                }
            }
            if partitions.is_empty() {
                table.remove(topic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;

    #[tokio::test]
    async fn a_produce_before_the_wait_still_wakes_it() {
        let waiter = Waiter::on(vec![("before".into(), 0)]);
        landed("before", 0);
        timeout(Duration::from_secs(1), waiter.produced())
            .await
            .expect("woken by the produce that landed before the wait");
    }

    #[tokio::test]
    async fn only_a_produce_on_a_partition_asked_for_wakes_a_fetch() {
        let waiter = Waiter::on(vec![("asked".into(), 1)]);
        landed("asked", 0);
        landed("other", 1);
        assert!(
            timeout(Duration::from_millis(50), waiter.produced())
                .await
                .is_err(),
            "woken by a partition it did not ask for"
        );
        landed("asked", 1);
        timeout(Duration::from_secs(1), waiter.produced())
            .await
            .expect("woken by its own partition");
    }

    #[tokio::test]
    async fn a_finished_fetch_leaves_nothing_behind() {
        drop(Waiter::on(vec![("left".into(), 0), ("left".into(), 1)]));
        assert!(!waiting().contains_key("left"));
    }
}
