//! The consumer's watchdog: what it knows about the current client ([`Watch`]), how it
//! measures the client's partitions against the broker ([`measure`]), how a spare finds out
//! that the group's other members hold everything ([`every_partition_held`]), and its
//! decision, a pure function of what it has seen ([`Watch::stall`]).

use super::*;

/// What the watchdog found wrong with a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stall {
    /// It has held no partition for longer than the bound.
    NoPartitions,
    /// Messages waited on the broker and it took none for longer than the bound.
    NoProgress,
    /// It could not reach the broker, which accepts connections, for longer than the grace.
    CutOff,
    /// A partition worker ended (it panicked).
    WorkerEnded,
}

impl Stall {
    pub(super) const ALL: [Stall; 4] = [
        Stall::NoPartitions,
        Stall::NoProgress,
        Stall::CutOff,
        Stall::WorkerEnded,
    ];

    /// The `reason` label of `consumer_rejoins_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Stall::NoPartitions => "no_partitions",
            Stall::NoProgress => "no_progress",
            Stall::CutOff => "cut_off",
            Stall::WorkerEnded => "worker_ended",
        }
    }

    pub(super) fn describe(self, bound: Duration) -> String {
        let secs = bound.as_secs_f64();
        match self {
            Stall::NoPartitions => format!("held no partition for more than {secs:.0} s"),
            Stall::NoProgress => {
                format!("took no message for more than {secs:.0} s while messages were waiting")
            }
            Stall::CutOff => {
                format!(
                    "could not reach the broker for more than {secs:.0} s, while it accepts connections"
                )
            }
            Stall::WorkerEnded => "lost a partition worker, which panicked".to_owned(),
        }
    }
}

/// What the watchdog knows about the current client.
pub(super) struct Watch {
    /// When the client last held a partition, or was created.
    pub(super) assigned_at: Instant,
    /// When the client last took or finished a message.
    pub(super) progress_at: Instant,
    /// Since when messages have waited with no progress, by the measurements.
    pub(super) stalled_since: Option<Instant>,
    /// Since when the client's measurements failed while the broker accepted connections.
    pub(super) cut_off_since: Option<Instant>,
    /// Whether the last look found every partition held by other members (a spare), and when
    /// that look was.
    pub(super) spare: bool,
    pub(super) spare_checked_at: Option<Instant>,
    /// Per partition the spare has seen messages waiting on: the committed offset then, and
    /// since when it has stood there.
    pub(super) holders: HashMap<(String, i32), (Option<i64>, Instant)>,
    /// When the last measurement started, and the one in flight.
    pub(super) measured_at: Option<Instant>,
    pub(super) measuring: Option<tokio::task::JoinHandle<(Instant, Measurement)>>,
}

/// One look at the client's partitions: per partition, the broker's end and how far this
/// consumer has taken and committed messages.
pub(super) enum Measurement {
    Partitions(Vec<PartitionView>),
    /// The client could not ask the broker; `reachable` says whether a plain TCP connection
    /// to it worked.
    Failed {
        reachable: bool,
    },
}

pub(super) struct PartitionView {
    pub(super) topic: String,
    pub(super) partition: i32,
    /// The first offset still on the broker.
    pub(super) low: i64,
    /// The offset the next message will get.
    pub(super) high: i64,
    /// The group's committed offset, if any.
    pub(super) committed: Option<i64>,
    /// The offset after the last message this client handed out, if any.
    pub(super) position: Option<i64>,
}

/// How often the watchdog looks at the client.
pub(super) const TICK: Duration = Duration::from_secs(1);

/// How often a spare (a consumer that holds nothing while the group holds every partition)
/// asks again.
pub(super) const SPARE_CHECK_EVERY: Duration = Duration::from_secs(5);

impl<H: Handler> ConsumerRunner<H> {
    /// One look at the client: its assignment, its last measurement, and whether a new one is
    /// due. Returns what is wrong when the client must be replaced.
    pub(super) async fn watch(
        &self,
        session: &mut Session,
        unassigned_since: &mut Option<Instant>,
    ) -> Option<Stall> {
        let bound = self.kafka.watchdog_bound();
        let now = Instant::now();
        // Messages in a worker's hands count as progress: a worker retrying a transient
        // failure is busy, not stalled, and a new client would not help it.
        if session.progress.in_flight.load(Ordering::SeqCst) > 0 {
            session.watch.progress();
        } else {
            let finished_at = *lock(&session.progress.finished_at);
            if finished_at > session.watch.progress_at {
                session.watch.progress_at = finished_at;
                session.watch.stalled_since = None;
            }
        }
        let held = session.consumer.assignment().map_or(0, |a| a.count());
        self.metrics.partitions.set(held as f64);
        let assigned = held > 0;
        if assigned {
            session.watch.assigned_at = now;
            if std::mem::take(&mut session.watch.spare) {
                self.metrics.spare.set(0.0);
            }
            if unassigned_since.take().is_some() {
                tracing::info!(consumer = self.name, "the consumer holds partitions");
            }
            self.health.up(HEALTH_PART);
        } else {
            let since = *unassigned_since.get_or_insert(now);
            // Holding nothing for a while: a spare (the group has more members than
            // partitions, and every partition is held) is healthy and waits, where a member
            // left out of a group that needs it is stuck.
            // Asked at every look until the answer is yes (a group that is still settling says
            // no for a moment), then every few seconds.
            let due = !session.watch.spare
                || session
                    .watch
                    .spare_checked_at
                    .is_none_or(|at| now.duration_since(at) >= SPARE_CHECK_EVERY);
            if now.duration_since(since) > bound / 2 && due {
                session.watch.spare_checked_at = Some(now);
                let was = session.watch.spare;
                let held = self.every_partition_held(&session.consumer).await;
                session.watch.spare = held.is_some_and(|partitions| {
                    session.watch.holders_progress(partitions, now, bound)
                });
                let spare = if session.watch.spare { 1.0 } else { 0.0 };
                self.metrics.spare.set(spare);
                if session.watch.spare && !was {
                    tracing::info!(
                        consumer = self.name,
                        "every partition is held by another member of the group; this one waits as a spare"
                    );
                }
            }
            if session.watch.spare {
                session.watch.assigned_at = now;
                self.health.up(HEALTH_PART);
            } else if now.duration_since(since) > bound {
                self.health
                    .failing(HEALTH_PART, Stall::NoPartitions.describe(bound));
            }
        }
        if let Some(job) = session.watch.measuring.take_if(|job| job.is_finished())
            && let Ok((started, measurement)) = job.await
        {
            self.take_measurement(session, started, measurement);
        }
        let interval = self.kafka.lag_interval;
        let due = session
            .watch
            .measured_at
            .is_none_or(|at| now.duration_since(at) >= interval);
        if due && session.watch.measuring.is_none() && assigned {
            session.watch.measured_at = Some(now);
            let consumer = session.consumer.clone();
            let brokers = self.kafka.brokers.clone();
            let name = self.name;
            // Nothing waits for a measurement when the session ends, so it may hold the
            // client's last handle: it lets go of it as the session's close does.
            session.watch.measuring = Some(tokio::task::spawn_blocking(move || {
                let measured = (Instant::now(), measure(&consumer, &brokers));
                super::let_go(name, consumer);
                measured
            }));
        }
        let stall = session.watch.stall(now, bound)?;
        // A new client cannot help while the broker itself is away.
        let brokers = self.kafka.brokers.clone();
        let reachable = tokio::task::spawn_blocking(move || {
            crate::kafka::broker_reachable(&brokers, Duration::from_secs(1))
        })
        .await
        .unwrap_or(false);
        reachable.then_some(stall)
    }

    /// Whether every partition of this consumer's topics is held by a member of its group, by
    /// the group's description and the topics' metadata, with each partition's committed
    /// offset and end; `None` when not, or when either cannot be had.
    pub(super) async fn every_partition_held(
        &self,
        consumer: &Arc<ServiceConsumer>,
    ) -> Option<Vec<Held>> {
        let consumer = consumer.clone();
        let group = self
            .kafka
            .group_id
            .clone()
            .unwrap_or_else(|| self.name.to_owned());
        let topics = self.topics.clone();
        let name = self.name;
        tokio::task::spawn_blocking(move || {
            let held = every_partition_held(&consumer, &group, &topics);
            super::let_go(name, consumer);
            held
        })
        .await
        .unwrap_or(None)
    }

    /// Updates the lag gauge and the watchdog's view from one measurement.
    pub(super) fn take_measurement(
        &self,
        session: &mut Session,
        started: Instant,
        measurement: Measurement,
    ) {
        let watch = &mut session.watch;
        let partitions = match measurement {
            Measurement::Failed { reachable } => {
                if reachable {
                    watch.cut_off_since.get_or_insert(started);
                } else {
                    watch.cut_off_since = None;
                }
                return;
            }
            Measurement::Partitions(partitions) => partitions,
        };
        watch.cut_off_since = None;
        let mut waiting = false;
        for view in partitions {
            let stored = session.progress.stored(&view.topic, view.partition);
            let (lag, messages_waiting) = view.lag(stored);
            self.metrics.lag(&view.topic, view.partition, lag);
            waiting |= messages_waiting;
        }
        if waiting && started > watch.progress_at {
            watch.stalled_since.get_or_insert(started);
        } else if !waiting {
            watch.stalled_since = None;
        }
    }
}

impl PartitionView {
    /// The partition's lag (messages after the last one finished), and whether messages are
    /// waiting that this client has not even taken, given the last offset it `stored`.
    pub(super) fn lag(&self, stored: Option<i64>) -> (i64, bool) {
        // Finished: what this client stored or the group committed; with neither, the
        // consumer starts at the first offset on the broker (`auto.offset.reset`).
        let done = stored
            .map(|offset| offset + 1)
            .into_iter()
            .chain(self.committed)
            .max()
            .unwrap_or(self.low);
        let taken = self.position.map_or(done, |position| position.max(done));
        ((self.high - done).max(0), self.high > taken)
    }
}

/// A partition another member holds, as a spare sees it: where the group's committed offset
/// stands and where the partition ends.
pub(super) struct Held {
    pub(super) partition: (String, i32),
    pub(super) committed: Option<i64>,
    pub(super) low: i64,
    pub(super) high: i64,
}

impl Watch {
    /// What the watchdog knows of a client created at `at`: nothing yet.
    pub(super) fn new(at: Instant) -> Self {
        Watch {
            assigned_at: at,
            progress_at: at,
            stalled_since: None,
            cut_off_since: None,
            spare: false,
            spare_checked_at: None,
            holders: HashMap::new(),
            measured_at: None,
            measuring: None,
        }
    }

    /// What is wrong with the client at `now`, by what the watchdog has seen, if anything: it
    /// has held no partition for longer than `bound`, or messages have waited with no progress
    /// for that long, or it has been cut off from a broker that answers others for half that
    /// long. The first of these that holds is the reason.
    pub(super) fn stall(&self, now: Instant, bound: Duration) -> Option<Stall> {
        let longer = |since: Option<Instant>, limit: Duration| {
            since.is_some_and(|since| now.duration_since(since) > limit)
        };
        if now.duration_since(self.assigned_at) > bound {
            Some(Stall::NoPartitions)
        } else if longer(self.stalled_since, bound) {
            Some(Stall::NoProgress)
        } else if longer(self.cut_off_since, bound / 2) {
            Some(Stall::CutOff)
        } else {
            None
        }
    }

    /// Whether the members holding `partitions` are working: none of them has had messages
    /// waiting with its group's committed offset standing still for longer than `bound`. A
    /// member that died without leaving can stay in the group holding its partitions (Tansu
    /// never evicts one); the spare then must not wait for it, but rejoin, which rebalances.
    pub(super) fn holders_progress(
        &mut self,
        partitions: Vec<Held>,
        now: Instant,
        bound: Duration,
    ) -> bool {
        let mut working = true;
        let mut seen = HashMap::new();
        for held in partitions {
            let waiting = held.high > held.committed.unwrap_or(held.low);
            if !waiting {
                continue;
            }
            let since = match self.holders.get(&held.partition) {
                Some((committed, since)) if *committed == held.committed => *since,
                _ => now,
            };
            working &= now.duration_since(since) <= bound;
            seen.insert(held.partition, (held.committed, since));
        }
        self.holders = seen;
        working
    }

    /// The client took or finished a message.
    pub(super) fn progress(&mut self) {
        self.progress_at = Instant::now();
        self.stalled_since = None;
    }
}

/// How long each question to the broker may take while measuring.
pub(super) const MEASURE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the broker for the end of every assigned partition and the group's committed offsets.
/// Blocking: it runs on the blocking pool. The first failure ends it, so that a client that
/// cannot reach the broker is found out in one timeout, not one per partition.
pub(super) fn measure(consumer: &ServiceConsumer, brokers: &str) -> Measurement {
    let failed = || Measurement::Failed {
        reachable: crate::kafka::broker_reachable(brokers, Duration::from_secs(1)),
    };
    let Ok(assignment) = consumer.assignment() else {
        return failed();
    };
    let Ok(committed) = consumer.committed_offsets(assignment.clone(), MEASURE_TIMEOUT) else {
        return failed();
    };
    let position = consumer.position().ok();
    let offset_of = |list: Option<&rdkafka::TopicPartitionList>, topic: &str, partition: i32| {
        list?
            .find_partition(topic, partition)
            .and_then(|p| p.offset().to_raw())
            .filter(|offset| *offset >= 0)
    };
    let mut views = Vec::new();
    for element in assignment.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, MEASURE_TIMEOUT) else {
            return failed();
        };
        views.push(PartitionView {
            topic: topic.to_owned(),
            partition,
            low,
            high,
            committed: offset_of(Some(&committed), topic, partition),
            position: offset_of(position.as_ref(), topic, partition),
        });
    }
    Measurement::Partitions(views)
}

/// Whether the members of `group` hold, between them, every partition of `topics`, one of
/// them holds nothing (this consumer, a spare), and the group is stable; if so, each
/// partition with the group's committed offset and its end.
/// Blocking, like [`measure`].
pub(super) fn every_partition_held(
    consumer: &ServiceConsumer,
    group: &str,
    topics: &[String],
) -> Option<Vec<Held>> {
    let groups = consumer
        .fetch_group_list(Some(group), MEASURE_TIMEOUT)
        .ok()?;
    let info = groups.groups().iter().find(|g| g.name() == group)?;
    if info.state() != "Stable" {
        return None;
    }
    let mut held = std::collections::HashSet::new();
    let mut idle_members = 0;
    for member in info.members() {
        let assigned = member.assignment().and_then(assigned_partitions)?;
        idle_members += usize::from(assigned.is_empty());
        held.extend(assigned);
    }
    // A spare is itself a member that holds nothing. A group in which every member holds
    // something does not count this consumer among them: it is the group as it stood before
    // (after a broker restart, with this consumer's earlier self holding the partitions), and
    // this consumer is left out, not spare.
    if idle_members == 0 {
        return None;
    }
    let mut list = rdkafka::TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), MEASURE_TIMEOUT).ok()?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| p.id())
            .collect();
        if partitions.is_empty() {
            return None;
        }
        for partition in partitions {
            if !held.contains(&(topic.clone(), partition)) {
                return None;
            }
            list.add_partition(topic, partition);
        }
    }
    let committed = consumer
        .committed_offsets(list.clone(), MEASURE_TIMEOUT)
        .ok()?;
    let mut partitions = Vec::new();
    for element in list.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, MEASURE_TIMEOUT)
            .ok()?;
        let committed = committed
            .find_partition(topic, partition)
            .and_then(|p| p.offset().to_raw())
            .filter(|offset| *offset >= 0);
        partitions.push(Held {
            partition: (topic.to_owned(), partition),
            committed,
            low,
            high,
        });
    }
    Some(partitions)
}

/// The partitions of a member's assignment, as the consumer protocol encodes it: a version
/// (int16), then per topic its name (int16 length, bytes) and its partitions (int32 count,
/// int32 each), then user data. `None` if the bytes are not of that shape.
pub(super) fn assigned_partitions(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn i16(&mut self) -> Option<i16> {
            Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
        }
        fn i32(&mut self) -> Option<i32> {
            Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
    }
    let mut reader = Reader(bytes);
    reader.i16()?;
    let topics = reader.i32()?;
    let mut partitions = Vec::new();
    for _ in 0..topics.max(0) {
        let length = usize::try_from(reader.i16()?).ok()?;
        let topic = std::str::from_utf8(reader.take(length)?).ok()?.to_owned();
        let count = reader.i32()?;
        for _ in 0..count.max(0) {
            partitions.push((topic.clone(), reader.i32()?));
        }
    }
    Some(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(low: i64, high: i64, committed: Option<i64>, position: Option<i64>) -> PartitionView {
        PartitionView {
            topic: "t".into(),
            partition: 0,
            low,
            high,
            committed,
            position,
        }
    }

    #[test]
    fn the_watchdog_names_the_first_stall_past_its_bound_and_none_before() {
        let start = Instant::now();
        let bound = Duration::from_secs(10);
        let at = |secs| start + Duration::from_secs(secs);
        let mut seen = Watch::new(start);
        assert_eq!(seen.stall(at(10), bound), None);
        assert_eq!(seen.stall(at(11), bound), Some(Stall::NoPartitions));
        seen.assigned_at = at(11);
        seen.stalled_since = Some(at(2));
        assert_eq!(seen.stall(at(12), bound), None);
        assert_eq!(seen.stall(at(13), bound), Some(Stall::NoProgress));
        seen.stalled_since = None;
        // Cut off: half the bound is enough, since a new client may reach the broker.
        seen.cut_off_since = Some(at(8));
        assert_eq!(seen.stall(at(13), bound), None);
        assert_eq!(seen.stall(at(14), bound), Some(Stall::CutOff));
    }

    #[test]
    fn a_spare_waits_only_while_the_holders_commit_what_waits() {
        let start = Instant::now();
        let bound = Duration::from_secs(10);
        let held = |committed, high| Held {
            partition: ("t".into(), 0),
            committed,
            low: 0,
            high,
        };
        let mut watch = Watch::new(start);
        // Nothing waits, or what waits is being committed: the holders work.
        assert!(watch.holders_progress(vec![held(Some(5), 5)], start, bound));
        assert!(watch.holders_progress(vec![held(Some(5), 9)], start, bound));
        let later = start + Duration::from_secs(8);
        assert!(watch.holders_progress(vec![held(Some(7), 9)], later, bound));
        // The committed offset stands still with messages waiting past the bound: a holder
        // that is gone.
        let much_later = later + Duration::from_secs(11);
        assert!(!watch.holders_progress(vec![held(Some(7), 9)], much_later, bound));
        // A partition seen waiting for the first time is given the bound.
        assert!(watch.holders_progress(vec![held(None, 3)], much_later, bound));
    }

    #[test]
    fn an_assignment_is_read_as_the_consumer_protocol_writes_it() {
        // Version 0; one topic "t" with partitions 0 and 2; no user data.
        let mut bytes = vec![0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2];
        bytes.extend([0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            assigned_partitions(&bytes),
            Some(vec![("t".to_owned(), 0), ("t".to_owned(), 2)])
        );
        assert_eq!(assigned_partitions(&bytes[..9]), None);
        assert_eq!(assigned_partitions(&[0, 0, 0, 0, 0, 0]), Some(vec![]));
    }

    #[test]
    fn a_partition_read_to_its_end_has_no_lag_and_nothing_waiting() {
        assert_eq!(view(0, 10, Some(10), None).lag(None), (0, false));
        assert_eq!(view(0, 10, Some(4), Some(10)).lag(Some(9)), (0, false));
        assert_eq!(view(0, 0, None, None).lag(None), (0, false));
    }

    #[test]
    fn messages_taken_but_not_finished_are_lag_but_not_waiting() {
        assert_eq!(view(0, 10, Some(5), Some(10)).lag(Some(6)), (3, false));
    }

    #[test]
    fn messages_not_taken_at_all_are_waiting() {
        assert_eq!(view(0, 10, Some(5), None).lag(None), (5, true));
        assert_eq!(view(3, 10, None, None).lag(None), (7, true));
        assert_eq!(view(0, 10, Some(5), Some(7)).lag(Some(6)), (3, true));
    }
}
