// Added to Tansu 0.6.0 by saga-broker (saga patches 7 and 12), under Tansu's license:
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

//! saga patches 7 and 12 (PATCHES.md): fetches that wait for records without polling
//! storage, and that ask storage only what it may have changed since they last asked.
//!
//! A fetch that found too little registers a [`Waiter`] on the partitions it asks for and
//! sleeps until a produce lands on one of them ([`landed`]) or its wait runs out. It
//! registers before its first look at storage, and a [`tokio::sync::Notify`] keeps a wake-up
//! that arrives while nobody awaits it, so a produce that lands between the look and the
//! sleep is never missed.
//!
//! Each partition also counts its produces (its generation). The offsets a look read from
//! storage (its [`OffsetStage`]: log start, high watermark, last stable offset) are
//! remembered with the generation seen before reading them; while the generation is the
//! same, and nothing else that changes a partition's offsets has happened
//! ([`changed_elsewhere`]: records or topics created or deleted, a transaction ended,
//! retention run), the next look takes them from memory ([`stage`]). A fetch at or past the
//! remembered high watermark is then answered with no query at all, and one below it asks
//! only for the records. The same epoch guards the topics' names and ids ([`topic`]), which
//! every look needs and which change only when topics are created or deleted.
//!
//! The broker is one process, so one table serves every connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::{OffsetStage, TopicId};

/// What is known of one partition.
#[derive(Default)]
struct Partition {
    /// Produces stored so far.
    generation: u64,
    /// The fetches waiting on it.
    waiters: HashMap<u64, Arc<Notify>>,
    /// The offsets the last look read, and what it saw before reading them.
    stage: Option<(OffsetStage, Seen)>,
}

/// A partition's generation and the broker's epoch, read before a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    generation: u64,
    epoch: u64,
}

/// Partitions by topic name, then index.
type Table = HashMap<String, HashMap<i32, Partition>>;

/// A topic as a fetch names it (by name or by id), and what it is: its id and name, in the
/// epoch they were read.
type Topics = HashMap<TopicId, (KnownTopic, u64)>;

/// A topic's id and name, as the metadata gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KnownTopic {
    pub(crate) id: Option<[u8; 16]>,
    pub(crate) name: String,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);
static TOPICS: LazyLock<Mutex<Topics>> = LazyLock::new(Mutex::default);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// Bumped by whatever changes offsets or topics other than a produce.
static EPOCH: AtomicU64 = AtomicU64::new(0);

fn table() -> MutexGuard<'static, Table> {
    // The table holds only wake-ups, counts and copies of what storage said, each checked
    // against the counts before use; one left by a panicking thread is still sound.
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn topics() -> MutexGuard<'static, Topics> {
    // Every entry carries its epoch, checked before use: a poisoned map is still sound.
    TOPICS.lock().unwrap_or_else(PoisonError::into_inner)
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
    partition.stage = None;
    for notify in partition.waiters.values() {
        notify.notify_one();
    }
}

/// Something other than a produce changed offsets or topics (records or a topic created or
/// deleted, a transaction ended, retention ran): every remembered answer is stale.
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

/// The offsets of the partition as a look that started from `seen` read them, if nothing
/// has been stored or changed since that look (and so since `seen`).
pub(crate) fn stage(topic: &str, index: i32, seen: Seen) -> Option<OffsetStage> {
    let table = table();
    let (stage, read_at) = table.get(topic)?.get(&index)?.stage?;
    (read_at == seen && EPOCH.load(Ordering::SeqCst) == seen.epoch).then_some(stage)
}

/// A look that started from `seen` read the partition's offsets as `stage`.
pub(crate) fn read_stage(topic: &str, index: i32, stage: OffsetStage, seen: Seen) {
    let mut table = table();
    let partition = partition(&mut table, topic, index);
    // A produce or a change that came during the look already moved the counts on: then the
    // look is not remembered, since it may have read the offsets from before it.
    if partition.generation == seen.generation && EPOCH.load(Ordering::SeqCst) == seen.epoch {
        partition.stage = Some((stage, seen));
    }
}

/// What the broker's epoch is now; read it before asking storage about a topic.
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::SeqCst)
}

/// The id and name of a topic a fetch names, as read in the current epoch.
pub(crate) fn topic(named: &TopicId) -> Option<KnownTopic> {
    let topics = topics();
    let (known, epoch) = topics.get(named)?;
    (*epoch == EPOCH.load(Ordering::SeqCst)).then(|| known.clone())
}

/// Storage said what the topic named `named` is, asked in `epoch` (read before asking).
pub(crate) fn read_topic(named: &TopicId, known: KnownTopic, epoch: u64) {
    let mut topics = topics();
    if EPOCH.load(Ordering::SeqCst) == epoch {
        // A topic is created or deleted only in another epoch: what was there before is
        // stale, so the map keeps only the current epoch's topics and stays small.
        topics.retain(|_, (_, read_in)| *read_in == epoch);
        let _ = topics.insert(named.clone(), (known, epoch));
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
