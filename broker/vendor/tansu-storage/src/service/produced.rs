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

//! saga patch 7 (PATCHES.md): fetches that wait for records without polling storage, and
//! do not look again at a partition where nothing has been stored since they last found it
//! empty.
//!
//! A fetch that found too little registers a [`Waiter`] on the partitions it asks for and
//! sleeps until a produce lands on one of them ([`landed`]) or its wait runs out. It
//! registers before its first look at storage, and a [`tokio::sync::Notify`] keeps a wake-up
//! that arrives while nobody awaits it, so a produce that lands between the look and the
//! sleep is never missed.
//!
//! Each partition also counts its produces (its generation). A look that finds nothing at a
//! fetch offset remembers the answer with the generation it saw before looking ([`Quiet`]);
//! while the generation is the same, and nothing else that changes a partition's offsets has
//! happened ([`changed_elsewhere`]: records or topics deleted, a transaction ended, retention
//! run), a fetch at that offset is answered from memory, with no query.
//!
//! The broker is one process, so one table serves every connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::OffsetStage;

/// What is known of one partition.
#[derive(Default)]
struct Partition {
    /// Produces stored so far.
    generation: u64,
    /// The fetches waiting on it.
    waiters: HashMap<u64, Arc<Notify>>,
    /// The last look that found nothing.
    quiet: Option<Quiet>,
}

/// A look at a partition that found nothing at `fetch_offset`, and the offsets it answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quiet {
    fetch_offset: i64,
    pub(crate) stage: OffsetStage,
    seen: Seen,
}

/// A partition's generation and the broker's epoch, read before a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    generation: u64,
    epoch: u64,
}

/// Partitions by topic name, then index.
type Table = HashMap<String, HashMap<i32, Partition>>;

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// Bumped by whatever changes offsets other than a produce.
static EPOCH: AtomicU64 = AtomicU64::new(0);

fn table() -> MutexGuard<'static, Table> {
    // The table holds only wake-ups and counts; one left by a panicking thread is still
    // sound.
    TABLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn partition<'t>(table: &'t mut Table, topic: &str, index: i32) -> &'t mut Partition {
    if !table.contains_key(topic) {
        let _ = table.insert(topic.to_owned(), HashMap::new());
    }
    table
        .get_mut(topic)
        .expect("inserted above")
        .entry(index)
        .or_default()
}

/// A produce to `partition` of `topic` is stored: wakes every fetch waiting on it, and makes
/// what fetches remember of it stale.
pub(crate) fn landed(topic: &str, index: i32) {
    let mut table = table();
    let partition = partition(&mut table, topic, index);
    partition.generation += 1;
    partition.quiet = None;
    for notify in partition.waiters.values() {
        notify.notify_one();
    }
}

/// Something other than a produce changed offsets (records or a topic deleted, a
/// transaction ended, retention ran): every remembered answer is stale.
pub(crate) fn changed_elsewhere() {
    let _ = EPOCH.fetch_add(1, Ordering::SeqCst);
}

/// What a look at a partition starts from; read it before the look.
pub(crate) fn seen(topic: &str, index: i32) -> Seen {
    // The epoch first: a change elsewhere during the look then shows as a newer epoch.
    let epoch = EPOCH.load(Ordering::SeqCst);
    let generation = table()
        .get(topic)
        .and_then(|partitions| partitions.get(&index))
        .map_or(0, |partition| partition.generation);
    Seen { generation, epoch }
}

/// The answer of the last look that found nothing at `fetch_offset`, if nothing has been
/// stored or changed since.
pub(crate) fn quiet(topic: &str, index: i32, fetch_offset: i64) -> Option<Quiet> {
    let epoch = EPOCH.load(Ordering::SeqCst);
    let table = table();
    let partition = table.get(topic)?.get(&index)?;
    partition.quiet.filter(|quiet| {
        quiet.fetch_offset == fetch_offset
            && quiet.seen
                == Seen {
                    generation: partition.generation,
                    epoch,
                }
    })
}

/// A look that started from `seen` found nothing at `fetch_offset`.
pub(crate) fn found_nothing(
    topic: &str,
    index: i32,
    fetch_offset: i64,
    stage: OffsetStage,
    seen: Seen,
) {
    let mut table = table();
    let partition = partition(&mut table, topic, index);
    // A produce that landed during the look already moved the generation on: then the look
    // is not remembered, since it may have missed those records.
    if partition.generation == seen.generation {
        partition.quiet = Some(Quiet {
            fetch_offset,
            stage,
            seen,
        });
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
        let mut table = table();
        for (topic, index) in &partitions {
            let _ = partition(&mut table, topic, *index)
                .waiters
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
        let mut table = table();
        for (topic, index) in &self.partitions {
            if let Some(partition) = table.get_mut(topic).and_then(|p| p.get_mut(index)) {
                let _ = partition.waiters.remove(&self.id);
            }
        }
    }
}
