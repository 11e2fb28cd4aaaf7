//! The idempotent consumer: how every service handles the events it consumes.
//!
//! For each message, in partition order:
//! 1. Decode it. A message that cannot be decoded can never be processed: it goes to the
//!    service's dead-letter topic ([`crate::dlq`]) with the reason, so that it never blocks its
//!    partition and is never lost. An event type the contract does not know is skipped. An
//!    event that does not belong where it arrived (its type belongs to another topic, or its
//!    envelope names a producer other than the topic's: [`contract::Misplaced`]) is
//!    dead-lettered the same way before any handler sees it, so that a credential that may
//!    write one topic cannot speak for another.
//! 2. In one transaction, insert the event id into `processed_event` (`ON CONFLICT DO
//!    NOTHING`) and apply the [`Handler`]'s effect, outbox rows included. If the id was already
//!    there, the event was handled before: roll back and change nothing.
//! 3. Commit, wake the outbox relay, and only then store the offset, which the consumer's
//!    periodic commit sends to the broker. A crash before the store means redelivery, which
//!    step 2 makes harmless.
//!
//! Each partition has a worker task of its own, fed by the one loop that takes messages
//! from the client: partitions are handled at the same time, each in offset order, so that
//! one order's events (one key, one partition) keep their order while a slow transaction on
//! one partition does not hold the others back, and concurrent commits share the database's
//! log flushes. (rdkafka's `split_partition_queue` would do the same inside librdkafka, but a
//! partition's queue must be split again after every rebalance before its first message
//! arrives, or messages land on the main queue; routing from one loop has no such window.)
//!
//! A worker handles the messages queued for it when one arrives (up to [`MAX_BATCH`])
//! together: steps 2 and 3 run once for the batch, each event with its own
//! `processed_event` row, so that a burst costs one commit instead of one per event. If
//! anything in the batch fails, the transaction rolls back and its messages are handled one
//! at a time as above, so a poison event or a retry never involves its neighbours.
//!
//! A transient failure (database down, deadlock) is retried with backoff, never skipped. A
//! handler that finds the event can never be applied says so ([`HandleError::Permanent`]),
//! and the message goes to the dead-letter topic too; so does an event whose effect the
//! database refuses for good (a constraint or a data exception: [`kit::db::is_permanent`]).
//!
//! A watchdog keeps the consumer honest about whether it is working. A consumer that has held
//! no partition for longer than `KAFKA_WATCHDOG_MS`, or that has had messages waiting on
//! the broker without taking any for that long, or whose client cannot reach a broker that
//! answers others, closes its client (leaving the group) and joins again with a new one. It
//! says so in the log and in `consumer_rejoins_total{reason}`, and reports itself not ready
//! ([`kit::health`]) while it holds nothing. It lives in [`watchdog`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract::topics::HEADER_TRACEPARENT;
use contract::{Decoded, Envelope};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod series;
mod watchdog;

use series::Series;

use watchdog::{Stall, TICK, Watch};

use crate::dlq::{DeadLetters, Filed, Letter};
use crate::kafka::{KafkaSettings, ServiceConsumer};
use crate::outbox::Outbox;
use kit::db::{Conn, Db, now_ms};
use kit::health::Health;
use kit::trace::TraceContext;

/// An event as a handler sees it: the decoded envelope and where it came from.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub envelope: Envelope,
    /// The trace the event belongs to; events the handler causes continue it.
    pub trace: TraceContext,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// What the handler asked to do once the event's transaction commits.
    committed: AfterCommit,
    /// The span the event is handled in.
    span: tracing::Span,
}

/// Work a handler leaves for after its transaction commits ([`Inbound::on_commit`]): figures
/// that must count what happened, never what was tried and rolled back.
#[derive(Clone, Default)]
struct AfterCommit(Arc<std::sync::Mutex<Vec<Deferred>>>);

/// One piece of work left for after a commit.
type Deferred = Box<dyn FnOnce() + Send>;

impl AfterCommit {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Deferred>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what an attempt that did not commit asked for.
    fn discard(&self) {
        self.lock().clear();
    }

    /// Runs what the committed attempt asked for.
    fn run(&self) {
        let work = std::mem::take(&mut *self.lock());
        for f in work {
            f();
        }
    }
}

impl std::fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AfterCommit({} waiting)", self.lock().len())
    }
}

impl Inbound {
    /// Runs `f` once the transaction applying this event commits, and never if it rolls back
    /// (it is then applied again, and asks again). For metrics of what the event did.
    pub fn on_commit(&self, f: impl FnOnce() + Send + 'static) {
        self.committed.lock().push(Box::new(f));
    }

    /// Writes `event` to the outbox as this service's answer to the inbound event: caused by
    /// it, and in its trace.
    pub async fn emit(
        &self,
        conn: &mut Conn,
        producer: &str,
        event: impl Into<contract::Event>,
    ) -> Result<(), sqlx::Error> {
        let envelope = Envelope::new(producer, event, Some(self.envelope.event_id));
        crate::outbox::enqueue(conn, &envelope, &self.trace).await
    }
}

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying: the same event may succeed later (database unavailable, deadlock).
    #[error("transient failure: {0}")]
    Transient(#[source] anyhow::Error),
    /// Will never succeed: the message goes to the dead-letter topic.
    #[error("the event can never be applied: {0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandleError {
    /// Data exceptions and constraint violations are permanent: the same event would fail
    /// the same way forever. Everything else is worth retrying.
    fn from(error: sqlx::Error) -> Self {
        if kit::db::is_permanent(&error) {
            HandleError::Permanent(format!("the database refuses the event's effect: {error}"))
        } else {
            HandleError::Transient(error.into())
        }
    }
}

/// What a service does with one event, inside the transaction that records it as handled.
///
/// Everything the handler writes, outbox rows included, commits or rolls back with the record
/// of the event, so the handler itself needs no idempotency bookkeeping for redelivery. It
/// still has to cope with events arriving in any order across topics.
pub trait Handler: Send + Sync + 'static {
    /// Whether the event may change anything here, judged from the event alone (its type,
    /// a field it carries). One that cannot is counted as ignored and its offset stored
    /// without a transaction: there is nothing to record, since handling it again would
    /// change nothing either, and a transaction would cost a commit (and on SQLite a sync of
    /// the log) for nothing. The default: every event may.
    fn concerns(&self, _event: &Envelope) -> bool {
        true
    }

    fn handle(
        &self,
        conn: &mut Conn,
        event: &Inbound,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// Called first in the transaction of a batch, with every event of it: a handler whose
    /// events lock rows that other partitions' events lock too (stock, say) takes those
    /// locks here, in one fixed order, so that two batches can never deadlock. The default
    /// takes none; the batch's lock timeout ([`kit::db::begin_batch`]) then breaks any
    /// deadlock quickly.
    fn lock_batch(
        &self,
        _conn: &mut Conn,
        _events: &[Inbound],
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Runs one consumer: reads, handles and stores offsets until shutdown, rejoining its group
/// with a new client whenever the watchdog finds it not working.
pub struct ConsumerRunner<H> {
    name: &'static str,
    topics: Vec<String>,
    kafka: KafkaSettings,
    db: Db,
    outbox: Outbox,
    handler: H,
    metrics: Series,
    health: Health,
    dead_letters: DeadLetters,
    /// How long the consumer rests between bursts ([`ConsumerRunner::resting`]); zero: never.
    rest: Duration,
}

/// The part name this consumer reports its state under in `/health/ready`.
pub const HEALTH_PART: &str = "consumer";

/// Most messages handled in one transaction.
pub const MAX_BATCH: usize = 64;

/// Whether events are applied alone or several in one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    Alone,
    Together,
}

/// What became of one attempt at one message.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Handled,
    Duplicate,
}

/// The kind of dead letter a handler refused for good ([`HandleError::Permanent`]); the other
/// kinds, a label of `events_dead_lettered_total` too, are the ways a message fails to decode
/// ([`contract::DecodeError::KINDS`]) or to belong where it arrived
/// ([`contract::Misplaced::KINDS`]).
const REJECTED: &str = "rejected";

/// What to do with a message once processing it has ended.
enum Disposition {
    /// Done with it: store its offset.
    Done,
    /// It can never be processed: dead-letter it, then store its offset. The first part is
    /// the kind of reason, a metric label; the second the reason in full.
    DeadLetter(&'static str, String),
    /// Shutdown came first: leave its offset, so it is consumed again.
    Interrupted,
}

/// Why a client's session ended.
enum SessionEnd {
    Shutdown,
    /// The watchdog found it not working; rejoin with a new client.
    Rejoin(Stall),
}

/// One client's life in the group, from creation to close.
struct Session {
    consumer: Arc<ServiceConsumer>,
    /// What the partition workers report back.
    progress: Arc<Progress>,
    /// The queue of each partition's worker, created on the partition's first message.
    workers: HashMap<(String, i32), mpsc::Sender<Taken>>,
    /// Messages of partitions whose worker's queue was full, in order: the partition is
    /// paused on the client until they are all handed over.
    held: HashMap<(String, i32), std::collections::VecDeque<Taken>>,
    /// The workers themselves; each ends when its queue closes or shutdown comes.
    tasks: JoinSet<()>,
    watch: Watch,
    rest: Rest,
}

/// Where a resting consumer is between its bursts ([`ConsumerRunner::resting`]).
#[derive(Debug, Default)]
struct Rest {
    /// When the burst being taken ends and the rest begins.
    burst_ends: Option<tokio::time::Instant>,
    /// When the rest ends.
    ends: Option<tokio::time::Instant>,
    /// The partitions the rest paused, resumed when it ends.
    paused: Vec<(String, i32)>,
    /// The partitions a message was taken from, with their generation then. A rest pauses
    /// only those taken from since they were last assigned: the client resumes a partition
    /// at the message after the last one taken, and one with nothing taken yet would resume
    /// wherever its fetching had got to, past messages fetched and not taken.
    taken: HashMap<(String, i32), u64>,
    /// The messages taken in the burst going on.
    in_burst: usize,
}

/// How long a resting consumer waits for the next message before its burst ends and it
/// rests: what a fetch brought comes in one run, so a pause this long means all of it is
/// taken.
const BURST: Duration = Duration::from_millis(5);

/// A burst of at least this many messages says the consumer is behind (a backlog): it goes
/// on without a rest, and rests after a smaller burst, once it has caught up. (Resting after
/// every burst cut a backlog into slices of one fetch or less per rest: 59,850 deliveries
/// caught up in 56 s instead of 17.)
const BEHIND: usize = MAX_BATCH;

/// A message taken from the client, with the generation its partition had then
/// ([`crate::kafka::Revocations`]).
type Taken = (OwnedMessage, u64);

/// What the workers of one client tell the loop that feeds them and the watchdog.
struct Progress {
    /// The last offset finished per partition, for the lag gauge.
    stored: Mutex<HashMap<(String, i32), i64>>,
    /// Messages handed to a worker and not finished yet.
    in_flight: AtomicUsize,
    /// When a worker last finished a message.
    finished_at: Mutex<Instant>,
}

impl Progress {
    fn new(now: Instant) -> Self {
        Progress {
            stored: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            finished_at: Mutex::new(now),
        }
    }

    fn finished(&self, message: &OwnedMessage) {
        lock(&self.stored).insert(
            (message.topic().to_owned(), message.partition()),
            message.offset(),
        );
        *lock(&self.finished_at) = Instant::now();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// A message dropped unhandled: its partition was revoked after it was taken.
    fn dropped(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn stored(&self, topic: &str, partition: i32) -> Option<i64> {
        lock(&self.stored)
            .get(&(topic.to_owned(), partition))
            .copied()
    }
}

/// A client's list of `partitions`.
fn partition_list(partitions: &[(String, i32)]) -> rdkafka::TopicPartitionList {
    let mut list = rdkafka::TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    list
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How often messages held for a full partition queue are offered to it again.
const RETRY_HELD: Duration = Duration::from_millis(20);

impl<H: Handler> ConsumerRunner<H> {
    /// A runner of a service, consuming `topics` in its group.
    pub fn new(topics: &[&str], handler: H, parts: &crate::parts::Parts) -> Self {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let kinds = contract::DecodeError::KINDS
            .into_iter()
            .chain(contract::Misplaced::KINDS);
        let dead_letter_kinds = std::iter::once(REJECTED).chain(kinds);
        let metrics = Series::resolve(
            parts.metrics.clone(),
            parts.name,
            &topics,
            dead_letter_kinds,
        );
        ConsumerRunner {
            name: parts.name,
            topics,
            kafka: parts.kafka.clone(),
            db: parts.db.clone(),
            outbox: parts.outbox.clone(),
            handler,
            metrics,
            health: parts.health.clone(),
            dead_letters: DeadLetters::new(parts.producer.clone(), parts.db.clone(), parts.name),
            rest: Duration::ZERO,
        }
    }

    /// Makes the consumer take its events in bursts, `rest` apart: once it has taken what a
    /// fetch brought (no message for [`BURST`]), it pauses its partitions for `rest`, so that
    /// the next fetch brings everything that landed meanwhile. A consumer behind rests only
    /// once it has caught up. Each burst then costs the broker one fetch and each
    /// partition one transaction, instead of one of each per event, and each event waits up
    /// to `rest` longer: for consumers off the order path (the forwarder). Zero: no rests.
    pub fn resting(mut self, rest: Duration) -> Self {
        self.rest = rest;
        self
    }

    /// Consumes until `shutdown`, then commits the offsets of everything it finished.
    pub async fn run(self, shutdown: CancellationToken) {
        // A consumer that its group has not given a partition yet does not do its job: the
        // service is not ready until it holds one, or is a spare (the watchdog says which).
        // Later, a moment without partitions (a rebalance) is ridden out for the watchdog's
        // bound before readiness says so.
        self.health.starting(
            HEALTH_PART,
            "has not been given a partition by its group yet",
        );
        let this = Arc::new(self);
        // Since when the consumer has held nothing, across rejoins: readiness reports it.
        let mut unassigned_since = Some(Instant::now());
        let Some(mut session) = this.connect(&shutdown).await else {
            return;
        };
        loop {
            let end = this
                .consume(&mut session, &mut unassigned_since, &shutdown)
                .await;
            // The workers finish the batch in hand (and store its offsets on this client)
            // before the client commits and closes.
            session.workers.clear();
            while session.tasks.join_next().await.is_some() {}
            match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Rejoin(stall) => {
                    let bound = this.kafka.watchdog_bound();
                    tracing::warn!(
                        consumer = this.name,
                        reason = stall.label(),
                        "the consumer {}; leaving the group and joining again with a new client",
                        stall.describe(bound)
                    );
                    this.metrics.rejoined(stall);
                    close(this.name, session.consumer).await;
                    match this.connect(&shutdown).await {
                        Some(next) => session = next,
                        None => return,
                    }
                }
            }
        }
        close(this.name, session.consumer).await;
    }

    /// A new client, subscribed; `None` if shutdown came first. Creating a client does not
    /// contact the broker, so this fails only on bad settings, which are retried with backoff
    /// and reported.
    async fn connect(&self, shutdown: &CancellationToken) -> Option<Session> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let create = || std::future::ready(self.kafka.consumer(self.name, &topics));
        let cannot = |error: &rdkafka::error::KafkaError, _, _| {
            // Readiness is public: it says what, the log says why.
            tracing::warn!(consumer = self.name, %error, "cannot create a Kafka consumer");
            self.health.failing(
                HEALTH_PART,
                "cannot create a Kafka consumer (the log says why)",
            );
        };
        let consumer = kit::backoff::retry_until_cancelled(shutdown, create, cannot).await?;
        let now = Instant::now();
        Some(Session {
            consumer: Arc::new(consumer),
            progress: Arc::new(Progress::new(now)),
            workers: HashMap::new(),
            held: HashMap::new(),
            tasks: JoinSet::new(),
            watch: Watch::new(now),
            rest: Rest::default(),
        })
    }

    /// Takes messages with one client and hands each to its partition's worker, until
    /// shutdown or until the watchdog says the client is not working.
    async fn consume(
        self: &Arc<Self>,
        session: &mut Session,
        unassigned_since: &mut Option<Instant>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry_held = tokio::time::interval(RETRY_HELD);
        retry_held.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut receive_failures = 0u32;
        loop {
            let message = tokio::select! {
                biased;
                () = shutdown.cancelled() => return SessionEnd::Shutdown,
                _ = tick.tick() => {
                    if let Some(stall) = self.watch(session, unassigned_since).await {
                        return SessionEnd::Rejoin(stall);
                    }
                    continue;
                }
                _ = retry_held.tick(), if !session.held.is_empty() => {
                    if let Err(stall) = self.hand_over_held(session) {
                        return SessionEnd::Rejoin(stall);
                    }
                    continue;
                }
                Some(ended) = session.tasks.join_next() => {
                // A worker ends early only at shutdown, or if it panicked outside a handler
                // (a handler's panic is caught and dead-letters its event): its messages then
                // count in flight forever and its partition is never handled again, so the
                // session ends at once and a new client starts every worker afresh.
                if shutdown.is_cancelled() {
                    return SessionEnd::Shutdown;
                }
                tracing::error!(consumer = self.name, panicked = ended.is_err(), "a partition worker ended");
                return SessionEnd::Rejoin(Stall::WorkerEnded);
            }
                () = kit::wake::due(session.rest.burst_ends) => {
                    self.start_rest(session);
                    continue;
                }
                () = kit::wake::due(session.rest.ends) => {
                    self.end_rest(session);
                    continue;
                }
                message = session.consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => {
                    receive_failures = 0;
                    message.detach()
                }
                Err(error) => {
                    receive_failures += 1;
                    tracing::warn!(consumer = self.name, %error, "could not receive a message");
                    let delay = kit::backoff::delay(receive_failures);
                    if !kit::backoff::pause(delay, shutdown).await {
                        return SessionEnd::Shutdown;
                    }
                    continue;
                }
            };
            session.watch.progress();
            let generation = session
                .consumer
                .context()
                .revocations()
                .generation(message.topic(), message.partition());
            let partition = (message.topic().to_owned(), message.partition());
            if !self.rest.is_zero() {
                // Recorded only when it changes: no key to copy for each message.
                if session.rest.taken.get(&partition) != Some(&generation) {
                    session.rest.taken.insert(partition.clone(), generation);
                }
                // The burst goes on while messages keep coming.
                if session.rest.ends.is_none() {
                    session.rest.in_burst += 1;
                    session.rest.burst_ends = Some(tokio::time::Instant::now() + BURST);
                }
            }
            session.progress.in_flight.fetch_add(1, Ordering::SeqCst);
            // Behind messages held for a full queue, a message waits its turn with them.
            if let Some(held) = session.held.get_mut(&partition) {
                held.push_back((message, generation));
                continue;
            }
            let queue = session.workers.entry(partition.clone()).or_insert_with(|| {
                // Messages waiting for their partition's worker: `KAFKA_PARTITION_QUEUE`.
                let (queue, messages) = mpsc::channel(self.kafka.partition_queue as usize);
                let worker = self.clone();
                let consumer = session.consumer.clone();
                let progress = session.progress.clone();
                let shutdown = shutdown.clone();
                session.tasks.spawn(async move {
                    worker.work(consumer, progress, messages, shutdown).await;
                });
                queue
            });
            match queue.try_send((message, generation)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(taken)) => {
                    // This partition's worker is behind (retrying, say): the partition is
                    // paused, and the rest go on, as does the watchdog.
                    self.pause(session, &partition, true);
                    self.metrics.paused.inc();
                    session.held.insert(partition, [taken].into());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    // The worker ended (see the `join_next` branch above, which usually sees
                    // it first).
                    if shutdown.is_cancelled() {
                        return SessionEnd::Shutdown;
                    }
                    tracing::error!(consumer = self.name, "a partition worker ended");
                    return SessionEnd::Rejoin(Stall::WorkerEnded);
                }
            }
        }
    }

    /// Hands held messages to their workers as their queues make room, and resumes each
    /// partition whose held messages are all handed over. Messages of a partition revoked
    /// since they were taken are dropped.
    fn hand_over_held(&self, session: &mut Session) -> Result<(), Stall> {
        let revocations = session.consumer.context().revocations();
        let mut resumed = Vec::new();
        for (partition, held) in &mut session.held {
            let Some(queue) = session.workers.get(partition) else {
                continue;
            };
            while let Some((message, generation)) = held.pop_front() {
                if generation != revocations.generation(&partition.0, partition.1) {
                    session.progress.dropped();
                    self.metrics.dropped.inc();
                    continue;
                }
                match queue.try_send((message, generation)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(taken)) => {
                        held.push_front(taken);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stall::WorkerEnded),
                }
            }
            if held.is_empty() {
                resumed.push(partition.clone());
            }
        }
        for partition in resumed {
            session.held.remove(&partition);
            self.pause(session, &partition, false);
        }
        Ok(())
    }

    /// Ends a burst: unless it says the consumer is behind ([`BEHIND`]), pauses, for
    /// [`Self::rest`], every partition the client holds and has
    /// taken a message from since it was assigned ([`Rest::taken`]), but those held for a
    /// full queue (paused already, and resumed when their queue has room).
    fn start_rest(&self, session: &mut Session) {
        session.rest.burst_ends = None;
        if std::mem::take(&mut session.rest.in_burst) >= BEHIND {
            return;
        }
        let Ok(assignment) = session.consumer.assignment() else {
            return;
        };
        let revocations = session.consumer.context().revocations();
        let paused: Vec<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .filter(|partition| {
                session.rest.taken.get(partition)
                    == Some(&revocations.generation(&partition.0, partition.1))
                    && !session.held.contains_key(partition)
            })
            .collect();
        if paused.is_empty() {
            return;
        }
        if let Err(error) = session.consumer.pause(&partition_list(&paused)) {
            tracing::debug!(consumer = self.name, %error, "could not pause the partitions for a rest; no rest");
            return;
        }
        session.rest.paused = paused;
        session.rest.ends = Some(tokio::time::Instant::now() + self.rest);
    }

    /// Ends a rest: resumes what it paused, but partitions held for a full queue meanwhile
    /// (resumed when their queue has room). A partition revoked meanwhile is resumed all the
    /// same: the client keeps a partition's pause across assignments, and one assigned again
    /// later must not come back paused.
    fn end_rest(&self, session: &mut Session) {
        session.rest.ends = None;
        let paused = std::mem::take(&mut session.rest.paused);
        let resumed: Vec<(String, i32)> = paused
            .into_iter()
            .filter(|partition| !session.held.contains_key(partition))
            .collect();
        if let Err(error) = session.consumer.resume(&partition_list(&resumed)) {
            tracing::debug!(consumer = self.name, %error, "could not resume the partitions after a rest");
        }
    }

    /// Pauses (or resumes) fetching one partition on the session's client.
    fn pause(&self, session: &Session, partition: &(String, i32), pause: bool) {
        let list = partition_list(std::slice::from_ref(partition));
        let (topic, partition) = partition;
        let done = if pause {
            session.consumer.pause(&list)
        } else {
            session.consumer.resume(&list)
        };
        match done {
            Ok(()) => tracing::debug!(
                consumer = self.name,
                topic,
                partition,
                pause,
                "partition paused or resumed"
            ),
            // A partition no longer assigned cannot be paused, nor needs to be.
            Err(error) => {
                tracing::debug!(consumer = self.name, topic, partition, %error, "could not pause or resume a partition")
            }
        }
    }

    /// One partition's worker: handles its messages in order, what it already holds as
    /// one batch, and stores each offset once the message is done.
    async fn work(
        &self,
        consumer: Arc<ServiceConsumer>,
        progress: Arc<Progress>,
        mut messages: mpsc::Receiver<Taken>,
        shutdown: CancellationToken,
    ) {
        while let Some(first) = messages.recv().await {
            if shutdown.is_cancelled() {
                return;
            }
            let mut taken = vec![first];
            while taken.len() < MAX_BATCH {
                match messages.try_recv() {
                    Ok(message) => taken.push(message),
                    Err(_) => break,
                }
            }
            // A message taken before its partition was revoked is the new owner's to handle
            // now: handling it here too would only do the work twice.
            let revocations = consumer.context().revocations();
            let mut batch = Vec::with_capacity(taken.len());
            for (message, generation) in taken {
                if generation == revocations.generation(message.topic(), message.partition()) {
                    batch.push(message);
                } else {
                    progress.dropped();
                    self.metrics.dropped.inc();
                }
            }
            if batch.is_empty() {
                continue;
            }
            let handled_together = batch.len() > 1 && self.process_together(&batch).await;
            for message in &batch {
                let handled = handled_together
                    || match self.process(message, &shutdown).await {
                        Disposition::Done => true,
                        Disposition::DeadLetter(kind, reason) => {
                            self.dead_letter(message, kind, &reason, &shutdown).await
                        }
                        Disposition::Interrupted => false,
                    };
                if !handled {
                    return;
                }
                if let Err(error) =
                    consumer.store_offset(message.topic(), message.partition(), message.offset())
                {
                    // The partition went to another member meanwhile; it reads the message
                    // again, and the processed-event record makes that harmless.
                    tracing::debug!(consumer = self.name, %error, "could not store an offset");
                }
                progress.finished(message);
            }
        }
    }

    /// Handles a batch in one transaction, in order; `true` if it committed. Anything out
    /// of the ordinary (a message that does not decode, an event type this service ignores,
    /// any error) rolls the whole batch back and answers `false`: the caller then handles the
    /// messages one at a time, which deals with each case on its own. Events that concern
    /// nothing here ([`Handler::concerns`]) are only counted; a batch of nothing else takes no
    /// transaction.
    async fn process_together(&self, batch: &[OwnedMessage]) -> bool {
        let mut inbounds = Vec::with_capacity(batch.len());
        let mut unconcerned = Vec::new();
        for message in batch {
            match Envelope::decode(message.payload().unwrap_or_default()) {
                Ok(Decoded::Known(envelope))
                    if envelope.check_provenance(message.topic()).is_ok() =>
                {
                    if self.handler.concerns(&envelope) {
                        inbounds.push(inbound(self.name, message, envelope));
                    } else {
                        unconcerned.push(message.topic());
                    }
                }
                _ => return false,
            }
        }
        // Counted only once the batch is sure not to be handled one at a time, which would
        // count them again.
        let count_unconcerned = || {
            for topic in &unconcerned {
                self.metrics.ignored(topic);
            }
        };
        if inbounds.is_empty() {
            count_unconcerned();
            return true;
        }
        let started = Instant::now();
        let outcomes = match self.apply_together(&inbounds).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::debug!(consumer = self.name, error = %error, size = batch.len(), "a batch failed; handling its messages one at a time");
                return false;
            }
        };
        self.metrics.batches.inc();
        count_unconcerned();
        // The batch's one transaction is shared by its events.
        let share = started.elapsed().as_secs_f64() / inbounds.len() as f64;
        for (inbound, outcome) in inbounds.iter().zip(outcomes) {
            self.count(inbound, &outcome, share);
        }
        true
    }

    /// Counts an event handled, alone or in a batch, or found already handled, and the
    /// seconds it took.
    fn count(&self, inbound: &Inbound, outcome: &Outcome, seconds: f64) {
        let event_type = inbound.envelope.event_type();
        self.metrics.event(&inbound.topic, event_type, |series| {
            match outcome {
                Outcome::Handled => series.handled.inc(),
                Outcome::Duplicate => series.duplicate.inc(),
            };
            series.duration.observe(seconds);
        });
    }

    /// One attempt at a batch, bounded as [`Self::apply`] is.
    async fn apply_together(&self, inbounds: &[Inbound]) -> Result<Vec<Outcome>, HandleError> {
        kit::db::bounded(self.apply_in_one_transaction(inbounds, Batch::Together))
            .await
            .unwrap_or_else(|| Err(stalled()))
    }

    /// One attempt at `inbounds`: each event recorded and applied, in order, in one
    /// transaction, which commits only if one of them was new (a batch first takes the
    /// handler's locks: [`Handler::lock_batch`]). On commit, the handlers' `on_commit` work
    /// runs and the relay is woken; on failure, all of it is undone, that work discarded.
    async fn apply_in_one_transaction(
        &self,
        inbounds: &[Inbound],
        batch: Batch,
    ) -> Result<Vec<Outcome>, HandleError> {
        for inbound in inbounds {
            inbound.committed.discard();
        }
        let mut tx = match batch {
            Batch::Alone => kit::db::begin(&self.db).await?,
            Batch::Together => {
                let mut tx = kit::db::begin_batch(&self.db).await?;
                self.handler.lock_batch(&mut tx, inbounds).await?;
                tx
            }
        };
        let mut outcomes = Vec::with_capacity(inbounds.len());
        for inbound in inbounds {
            let outcome = async {
                if !record(&mut tx, inbound).await? {
                    tracing::debug!("already handled; nothing to do");
                    return Ok::<_, HandleError>(Outcome::Duplicate);
                }
                handle_unwinding(&self.handler, &mut tx, inbound).await?;
                tracing::debug!(together = batch == Batch::Together, "handled");
                Ok(Outcome::Handled)
            }
            .instrument(inbound.span.clone())
            .await?;
            outcomes.push(outcome);
        }
        if !outcomes.contains(&Outcome::Handled) {
            // Nothing was written: every event was a copy of one applied before.
            tx.rollback().await?;
            return Ok(outcomes);
        }
        tx.commit().await?;
        for inbound in inbounds {
            inbound.committed.run();
        }
        self.outbox.wake();
        Ok(outcomes)
    }

    /// Handles one message until it is done, or known to be undeliverable, or shutdown comes.
    async fn process(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> Disposition {
        let payload = message.payload().unwrap_or_default();
        let envelope = match Envelope::decode(payload) {
            Ok(Decoded::Known(envelope)) => envelope,
            Ok(Decoded::Unknown {
                event_type,
                event_id,
            }) => {
                tracing::debug!(consumer = self.name, %event_type, %event_id, "ignoring an event type this service does not handle");
                self.metrics.ignored(message.topic());
                return Disposition::Done;
            }
            Err(error) => return Disposition::DeadLetter(error.kind(), error.to_string()),
        };
        if let Err(misplaced) = envelope.check_provenance(message.topic()) {
            return Disposition::DeadLetter(misplaced.kind(), misplaced.to_string());
        }
        if !self.handler.concerns(&envelope) {
            tracing::debug!(consumer = self.name, event_type = envelope.event_type(), event_id = %envelope.event_id, "ignoring an event that concerns nothing here");
            self.metrics.ignored(message.topic());
            return Disposition::Done;
        }
        let inbound = inbound(self.name, message, envelope);
        let span = inbound.span.clone();
        self.process_until_done(&inbound, shutdown)
            .instrument(span)
            .await
    }

    async fn process_until_done(
        &self,
        inbound: &Inbound,
        shutdown: &CancellationToken,
    ) -> Disposition {
        let event_type = inbound.envelope.event_type();
        // A permanent failure ends the retries as a value; only a transient one is retried.
        let attempt = || async {
            let started = Instant::now();
            match self.apply(inbound).await {
                Ok(outcome) => Ok(Ok((outcome, started.elapsed()))),
                Err(HandleError::Permanent(reason)) => Ok(Err(reason)),
                Err(HandleError::Transient(error)) => Err(error),
            }
        };
        let failed = |error: &anyhow::Error, attempt, delay| {
            tracing::warn!(
                error = format!("{error:#}"),
                attempt,
                ?delay,
                "handling failed; retrying"
            );
            self.metrics.event(&inbound.topic, event_type, |series| {
                series.retried.inc();
            });
        };
        match kit::backoff::retry_until_cancelled(shutdown, attempt, failed).await {
            Some(Ok((outcome, took))) => {
                self.count(inbound, &outcome, took.as_secs_f64());
                Disposition::Done
            }
            Some(Err(reason)) => Disposition::DeadLetter(REJECTED, reason),
            None => Disposition::Interrupted,
        }
    }

    /// Files a message that can never be processed as a dead letter ([`DeadLetters::file`]),
    /// retrying while the broker (or, to park it, the database) is away: it is never dropped,
    /// and never retried forever for a reason that cannot go away. `false` if shutdown came
    /// first.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        kind: &'static str,
        reason: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        tracing::error!(
            consumer = self.name,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            dlq = self.dead_letters.topic(),
            "a message that can never be processed goes to the dead-letter topic"
        );
        let letter = Letter::consumed(message, reason);
        let file = || self.dead_letters.file(&letter);
        let failed = |error: &_, _, delay| {
            tracing::warn!(%error, ?delay, "could not file a dead letter; retrying");
        };
        let Some(filed) = kit::backoff::retry_until_cancelled(shutdown, file, failed).await else {
            return false;
        };
        self.metrics.dead_lettered(kind);
        if filed == Filed::Parked {
            self.metrics.dead_letters_parked.inc();
        }
        true
    }

    /// One attempt at one event, within [`kit::db::work_timeout`]: a transaction that takes
    /// longer (its connection's server vanished, say) is given up and tried again.
    async fn apply(&self, inbound: &Inbound) -> Result<Outcome, HandleError> {
        let alone = self.apply_in_one_transaction(std::slice::from_ref(inbound), Batch::Alone);
        match kit::db::bounded(alone).await {
            Some(outcomes) => Ok(outcomes?.pop().unwrap_or(Outcome::Duplicate)),
            None => Err(stalled()),
        }
    }
}

/// Runs the handler, turning a panic into a permanent failure: a handler that panics on an
/// event is a bug that the same event would hit again, so the event is dead-lettered (to be
/// replayed once the bug is fixed) and its partition moves on, rather than its worker dying
/// with the message counted in flight.
async fn handle_unwinding<H: Handler>(
    handler: &H,
    conn: &mut Conn,
    inbound: &Inbound,
) -> Result<(), HandleError> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(handler.handle(conn, inbound))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            tracing::error!(panic = %what, "the handler panicked on this event");
            Err(HandleError::Permanent(format!(
                "the handler panicked: {what}"
            )))
        }
    }
}

/// A transaction that took longer than [`kit::db::work_timeout`]: worth trying again.
fn stalled() -> HandleError {
    HandleError::Transient(anyhow::anyhow!(
        "the transaction took longer than {:?}; given up",
        kit::db::work_timeout()
    ))
}

/// The event a message carries, as a handler sees it, with the span its handling runs in:
/// named as OpenTelemetry names a consumer's span (`order.events process`), its parent the
/// message's `traceparent`, and its own context the trace the events it causes carry.
fn inbound(consumer: &'static str, message: &OwnedMessage, envelope: Envelope) -> Inbound {
    let span = tracing::info_span!(
        parent: None,
        "event",
        otel.name = %format!("{} process", message.topic()),
        otel.kind = "consumer",
        consumer,
        event_type = envelope.event_type(),
        event_id = %envelope.event_id,
        key = %envelope.key(),
        trace_id = tracing::field::Empty,
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
    );
    let parent = header(message, HEADER_TRACEPARENT)
        .as_deref()
        .and_then(TraceContext::parse);
    let trace = kit::trace::continue_in(&span, parent);
    span.record("trace_id", trace.trace_id());
    Inbound {
        trace,
        span,
        envelope,
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        committed: AfterCommit::default(),
    }
}

/// Records the event as handled, in the caller's transaction; `false` if it already was.
async fn record(conn: &mut Conn, inbound: &Inbound) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO processed_event (event_id, event_type, topic, processed_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(inbound.envelope.event_id.to_string())
    .bind(inbound.envelope.event_type())
    .bind(&inbound.topic)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Longest a consumer may take to commit its offsets and leave its group on shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(4);

/// Commits the stored offsets and closes the consumer, which leaves the group so that its
/// partitions move to other members at once. librdkafka blocks while doing so, and blocks
/// for as long as the broker is unreachable; it runs on a thread of its own, and shutdown
/// goes on without it after [`CLOSE_TIMEOUT`]: uncommitted offsets only mean redelivery,
/// which the processed-event record absorbs.
/// Lets go of one handle on a client, in a blocking task that borrowed it. The last handle
/// closes the client when dropped, and librdkafka's close can hang for good (a rebalance
/// served during the close waits for an answer that never comes: confluentinc/librdkafka#4884);
/// on the runtime's blocking pool, that would hang the runtime's shutdown, which waits for
/// every blocking task. So the last handle is dropped on a thread of its own, as [`close`]
/// does, and a hang there holds nothing up.
pub(super) fn let_go(name: &'static str, consumer: Arc<ServiceConsumer>) {
    let Some(last) = Arc::into_inner(consumer) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-close"))
        .spawn(move || drop(last));
    if spawned.is_err() {
        tracing::warn!(
            consumer = name,
            "could not start a thread to close the consumer; closing it here"
        );
    }
}

async fn close(name: &'static str, consumer: Arc<ServiceConsumer>) {
    let (done, closed) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-close"))
        .spawn(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::debug!(consumer = name, "committed offsets on shutdown"),
                Err(error) => {
                    tracing::debug!(consumer = name, %error, "no offsets committed on shutdown")
                }
            }
            drop(consumer);
            let _ = done.send(());
        });
    if spawned.is_err() {
        tracing::warn!(
            consumer = name,
            "could not start a thread to close the consumer"
        );
        return;
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
        tracing::warn!(
            consumer = name,
            "the consumer did not close in time (is the broker down?); going on without it"
        );
    }
}

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}
