//! The outbox relay and the idempotent consumer, on their own, against a real Tansu broker and
//! a real Postgres database of each test's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use contract::{Decoded, Envelope, OrderConfirmed, topics};
use eventing::{Assemble, CommonSettings, HandleError, Handler, Inbound, Runtime, outbox};
use kit::db::{DatabaseSettings, Migrations, connect_and_migrate};
use kit::{Conn, TraceContext};
use rdkafka::Message;
use sqlx::migrate::Migrator;
use testkit::{Broker, eventually, fresh_database, produce_raw, read_topic};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The service these tests run as: one of the contract's consumers of `order.events`, since the
/// contract decides which topics a service's dead letters may go back to.
const SERVICE: &str = "analytics-forwarder";

const NO_MIGRATIONS: Migrations = Migrations {
    postgres: Migrator::DEFAULT,
    sqlite: Migrator::DEFAULT,
};

async fn runtime(label: &str, broker: &Broker) -> Runtime {
    let url = fresh_database(label).await.expect("database");
    let mut settings = CommonSettings::new(url, &broker.brokers);
    settings.relay.poll_interval = Duration::from_millis(50);
    settings.kafka.lag_interval = Duration::from_millis(200);
    Runtime::connect(SERVICE, settings, &NO_MIGRATIONS)
        .await
        .expect("runtime")
}

/// An `OrderConfirmed` in the order service's name: the consumers check that an event on
/// `order.events` comes from its producer.
fn confirmed(order_id: Uuid, n: i64) -> Envelope {
    Envelope::new(
        "order-service",
        OrderConfirmed {
            order_id,
            user_id: n,
            total_amount: n,
            discount_amount: 0,
            final_amount: n,
            confirmed_at: Utc::now(),
        },
        None,
    )
}

async fn enqueue_committed(runtime: &Runtime, envelopes: &[Envelope]) {
    let mut tx = kit::db::begin(&runtime.db).await.expect("begin");
    for envelope in envelopes {
        outbox::enqueue(&mut tx, envelope, &TraceContext::new_root())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    runtime.outbox.wake();
}

/// Publishes `payload` to `order.events` under `key`, as another producer would.
async fn produce(broker: &Broker, key: &str, payload: &[u8]) {
    produce_raw(&broker.brokers, topics::ORDER_EVENTS, key, payload, &[])
        .await
        .expect("produce");
}

/// Produces `envelope` under its own key, as its service would.
async fn produce_event(broker: &Broker, envelope: &Envelope) {
    produce(broker, &envelope.key(), envelope.to_json().as_bytes()).await;
}

/// Produces every one of `envelopes` under its own key with one producer, all sent before
/// any is waited for: a backlog in seconds rather than a producer per event.
async fn produce_events(broker: &Broker, envelopes: &[Envelope]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .create()
        .expect("producer");
    let messages: Vec<(String, String)> =
        envelopes.iter().map(|e| (e.key(), e.to_json())).collect();
    let mut deliveries = Vec::with_capacity(messages.len());
    for (key, payload) in &messages {
        let record = FutureRecord::to(topics::ORDER_EVENTS)
            .key(key)
            .payload(payload);
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued"),
        );
    }
    for delivery in deliveries {
        delivery
            .await
            .expect("not cancelled")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

/// The first message on `topic`, read from its beginning; it must come within 20 s.
async fn first_message(broker: &Broker, topic: &str) -> testkit::Received {
    let read = read_topic(&broker.brokers, topic, Duration::from_secs(20), |r| {
        !r.is_empty()
    })
    .await
    .expect("read");
    read.into_iter()
        .next()
        .unwrap_or_else(|| panic!("nothing on {topic} within 20 s"))
}

async fn unsent(runtime: &Runtime) -> i64 {
    outbox::backlog(&runtime.db).await.expect("backlog")
}

#[tokio::test]
async fn committed_outbox_rows_are_published_in_order_per_key_and_marked_sent() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("relay_order", &broker).await;
    let stop = CancellationToken::new();
    tokio::spawn(runtime.relay("relay-a".into()).run(stop.clone()));

    let orders: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let mut envelopes = Vec::new();
    for n in 0..60 {
        envelopes.push(confirmed(orders[n % orders.len()], n as i64));
    }
    // Three transactions, so that order must hold across commits too.
    for chunk in envelopes.chunks(20) {
        enqueue_committed(&runtime, chunk).await;
    }

    let read = read_topic(
        &broker.brokers,
        topics::ORDER_EVENTS,
        Duration::from_secs(20),
        |r| r.len() >= 60,
    )
    .await
    .expect("read");
    assert_eq!(read.len(), 60, "every committed row is published once");
    for order in &orders {
        let published: Vec<i64> = read
            .iter()
            .filter_map(|r| r.envelope.as_ref())
            .filter(|e| e.event.order_id() == Some(*order))
            .map(|e| match &e.event {
                contract::Event::OrderConfirmed(c) => c.user_id,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let mut sorted = published.clone();
        sorted.sort();
        assert_eq!(
            published, sorted,
            "events of one key arrive in the order they were committed"
        );
    }
    let first = &read[0];
    assert_eq!(first.header("event_type"), Some("OrderConfirmed"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert!(
        first
            .header("traceparent")
            .is_some_and(|t| TraceContext::parse(t).is_some())
    );
    eventually("every row marked sent", Duration::from_secs(5), || async {
        (unsent(&runtime).await == 0).then_some(())
    })
    .await;
    stop.cancel();
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_nothing_to_publish() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("relay_rollback", &broker).await;
    let mut tx = kit::db::begin(&runtime.db).await.expect("begin");
    outbox::enqueue(
        &mut tx,
        &confirmed(Uuid::now_v7(), 1),
        &TraceContext::new_root(),
    )
    .await
    .expect("enqueue");
    tx.rollback().await.expect("rollback");
    assert_eq!(unsent(&runtime).await, 0);
}

#[tokio::test]
async fn rows_committed_while_no_relay_ran_are_published_when_one_starts() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("relay_resume", &broker).await;
    // No relay is running: this is the state a crash right after the commit leaves behind.
    let envelope = confirmed(Uuid::now_v7(), 42);
    enqueue_committed(&runtime, std::slice::from_ref(&envelope)).await;
    assert_eq!(unsent(&runtime).await, 1);

    // A relay of a new process (a new instance id) finds the row by polling.
    let restarted = Runtime::connect(SERVICE, runtime.settings.clone(), &NO_MIGRATIONS)
        .await
        .expect("runtime");
    let stop = CancellationToken::new();
    tokio::spawn(restarted.relay("relay-b".into()).run(stop.clone()));
    let read = first_message(&broker, topics::ORDER_EVENTS).await;
    assert_eq!(read.envelope.as_ref(), Some(&envelope));
    stop.cancel();
}

/// Waits until the relay has published `rows` rows in all, looking every millisecond: the
/// tests that call it act on what the relay does right after publishing.
async fn published(runtime: &Runtime, rows: f64) {
    kit::poll::until(
        "the rows published",
        Duration::from_secs(20),
        Duration::from_millis(1),
        || async { (runtime.metrics.sample("outbox_published_total", &[]) >= rows).then_some(()) },
    )
    .await
    .expect("published");
}

#[tokio::test]
async fn rows_published_round_after_round_go_out_once_while_they_wait_to_be_marked_together() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("relay_mark_later", &broker).await;
    let stop = CancellationToken::new();
    let relay = tokio::spawn(runtime.relay("relay-a".into()).run(stop.clone()));
    // One row per transaction, each committed once the one before is published: a round
    // each, quicker than their marks wait, so later rounds run while earlier rows are
    // published and not marked.
    let order = Uuid::now_v7();
    for n in 1..=10 {
        enqueue_committed(&runtime, &[confirmed(order, n)]).await;
        published(&runtime, n as f64).await;
    }
    eventually("every row marked sent", Duration::from_secs(10), || async {
        (unsent(&runtime).await == 0).then_some(())
    })
    .await;
    // Every publish is acknowledged before its row is marked, so the topic now holds all it
    // ever will: read it to its end, however long the reader takes to start.
    let settings = runtime.settings.kafka.clone();
    let read = tokio::task::spawn_blocking(move || {
        ops::read::read_to_end(&settings, &[topics::ORDER_EVENTS], Duration::from_secs(30))
    })
    .await
    .expect("join")
    .expect("read");
    let totals: Vec<i64> = read
        .iter()
        .filter_map(|m| match Envelope::decode(m.payload()?).ok()? {
            Decoded::Known(envelope) => match envelope.event {
                contract::Event::OrderConfirmed(c) => Some(c.user_id),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        totals,
        (1..=10).collect::<Vec<_>>(),
        "each row once, in order: none published again while it waited to be marked"
    );
    stop.cancel();
    relay.await.expect("the relay stops");
}

#[tokio::test]
async fn a_relay_that_stops_marks_the_rows_it_published_before_it_lets_the_lease_go() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("relay_mark_on_stop", &broker).await;
    let stop = CancellationToken::new();
    let relay = tokio::spawn(runtime.relay("relay-a".into()).run(stop.clone()));
    enqueue_committed(&runtime, &[confirmed(Uuid::now_v7(), 1)]).await;
    // Stop as soon as the broker took the row, well before its mark is due.
    published(&runtime, 1.0).await;
    stop.cancel();
    relay.await.expect("the relay stops");
    assert_eq!(
        unsent(&runtime).await,
        0,
        "a stopping relay marks what it published, so that nobody publishes it again"
    );
}

/// A total the test handler refuses for good.
const IMPOSSIBLE: i64 = 666;
/// A total the test handler refuses for good with a reason of 4 kB.
const LONG_REASON: i64 = 777;
/// A total the test handler panics on.
const PANICS: i64 = 999;
/// A total the test handler fails on (as if the database were away) until released.
const STUCK: i64 = 31;
/// A total the effect table's CHECK constraint refuses.
const REFUSED_BY_DATABASE: i64 = 13;
/// A total the test handler says concerns nothing it keeps ([`Handler::concerns`]).
const UNCONCERNED: i64 = 40_404;

/// Counts each event it applies in a table, fails the first `fail_first` attempts, and refuses
/// events with an [`IMPOSSIBLE`] total.
#[derive(Clone)]
struct CountingHandler {
    fail_first: u32,
    attempts: Arc<AtomicU32>,
    /// Whether IMPOSSIBLE totals are refused; turning it off is "fixing the bug".
    refuse_impossible: Arc<AtomicBool>,
    /// Whether STUCK totals fail; turning it off is the database coming back.
    stuck: Arc<AtomicBool>,
    /// The size of every batch applied in one transaction, in order.
    batches: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl CountingHandler {
    fn failing_first(fail_first: u32) -> Self {
        CountingHandler {
            fail_first,
            attempts: Arc::default(),
            refuse_impossible: Arc::new(AtomicBool::new(true)),
            stuck: Arc::new(AtomicBool::new(true)),
            batches: Arc::default(),
        }
    }

    fn largest_batch(&self) -> usize {
        self.batches
            .lock()
            .expect("lock")
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
    }
}

impl Handler for CountingHandler {
    fn concerns(&self, event: &Envelope) -> bool {
        !matches!(&event.event, contract::Event::OrderConfirmed(c) if c.total_amount == UNCONCERNED)
    }

    async fn lock_batch(&self, _conn: &mut Conn, events: &[Inbound]) -> Result<(), HandleError> {
        self.batches.lock().expect("lock").push(events.len());
        Ok(())
    }

    async fn handle(&self, conn: &mut Conn, event: &Inbound) -> Result<(), HandleError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(HandleError::Transient(anyhow::anyhow!(
                "the database hiccupped"
            )));
        }
        if let contract::Event::OrderConfirmed(confirmed) = &event.envelope.event
            && confirmed.total_amount == IMPOSSIBLE
            && self.refuse_impossible.load(Ordering::SeqCst)
        {
            return Err(HandleError::Permanent(
                "this total can never be right".into(),
            ));
        }
        if let contract::Event::OrderConfirmed(confirmed) = &event.envelope.event
            && confirmed.total_amount == LONG_REASON
        {
            return Err(HandleError::Permanent(format!(
                "a reason this long: {}",
                "why ".repeat(1_000)
            )));
        }
        let total = match &event.envelope.event {
            contract::Event::OrderConfirmed(confirmed) => confirmed.total_amount,
            _ => 0,
        };
        assert_ne!(total, PANICS, "a handler with a bug");
        if total == STUCK && self.stuck.load(Ordering::SeqCst) {
            return Err(HandleError::Transient(anyhow::anyhow!(
                "the database is away"
            )));
        }
        sqlx::query("INSERT INTO effect (event_id, total) VALUES ($1, $2)")
            .bind(event.envelope.event_id.to_string())
            .bind(total)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn consuming_runtime(
    label: &str,
    broker: &Broker,
    handler: CountingHandler,
) -> (Runtime, CancellationToken) {
    consuming_runtime_with(label, broker, handler, |_| {}).await
}

/// [`consuming_runtime`], with its Kafka settings changed by `change` first.
async fn consuming_runtime_with(
    label: &str,
    broker: &Broker,
    handler: CountingHandler,
    change: impl FnOnce(&mut eventing::kafka::KafkaSettings),
) -> (Runtime, CancellationToken) {
    consuming_runtime_resting(label, broker, handler, change, Duration::ZERO).await
}

/// [`consuming_runtime_with`], its consumer resting `rest` between bursts.
async fn consuming_runtime_resting(
    label: &str,
    broker: &Broker,
    handler: CountingHandler,
    change: impl FnOnce(&mut eventing::kafka::KafkaSettings),
    rest: Duration,
) -> (Runtime, CancellationToken) {
    let mut runtime = runtime(label, broker).await;
    change(&mut runtime.settings.kafka);
    let dlq = (contract::topics::dlq_topic(SERVICE), 1, false);
    ops::topics::ensure_topics(&runtime.settings.kafka, &[dlq])
        .await
        .expect("dead-letter topic");
    // The CHECK lets a test make the database refuse an effect for good.
    sqlx::query(&format!(
        "CREATE TABLE effect (event_id TEXT NOT NULL, total BIGINT NOT NULL CHECK (total <> {REFUSED_BY_DATABASE}))"
    ))
        .execute(&runtime.db)
        .await
        .expect("effect table");
    let consumer = runtime
        .consumer(&[topics::ORDER_EVENTS], handler)
        .resting(rest);
    let stop = CancellationToken::new();
    tokio::spawn(consumer.run(stop.clone()));
    (runtime, stop)
}

async fn effects(runtime: &Runtime) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM effect")
        .fetch_one(&runtime.db)
        .await
        .expect("count")
}

/// Waits until exactly one event has had its effect: the good one a test puts behind poison.
async fn good_event_handled(runtime: &Runtime) {
    eventually(
        "the good event handled",
        Duration::from_secs(30),
        || async { (effects(runtime).await == 1).then_some(()) },
    )
    .await;
}

/// The totals of the events applied, smallest first.
async fn totals_applied(runtime: &Runtime) -> Vec<i64> {
    sqlx::query_scalar("SELECT total FROM effect ORDER BY total")
        .fetch_all(&runtime.db)
        .await
        .expect("totals")
}

async fn handled(runtime: &Runtime) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM processed_event")
        .fetch_one(&runtime.db)
        .await
        .expect("count")
}

#[tokio::test]
async fn the_same_event_delivered_twice_is_applied_once() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(0);
    let (runtime, stop) = consuming_runtime("dedup", &broker, handler.clone()).await;
    let envelope = confirmed(Uuid::now_v7(), 7);
    let marker = confirmed(Uuid::now_v7(), 8);
    for e in [&envelope, &envelope, &marker] {
        produce(&broker, &e.key(), e.to_json().as_bytes()).await;
    }
    eventually(
        "both distinct events handled",
        Duration::from_secs(30),
        || async { (handled(&runtime).await == 2).then_some(()) },
    )
    .await;
    // Give the duplicate, wherever it is in its partition, time to be seen too.
    eventually("the duplicate counted", Duration::from_secs(10), || async {
        (runtime.metrics.sample(
            "events_duplicate_total",
            &[("topic", "order.events"), ("event_type", "OrderConfirmed")],
        ) == 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(effects(&runtime).await, 2, "the duplicate changed nothing");
    // Everything on the topic is handled: the lag of the partition it is on is 0.
    eventually("the lag measured", Duration::from_secs(10), || async {
        let text = runtime.metrics.render();
        text.lines()
            .any(|l| {
                l.starts_with("consumer_lag{")
                    && l.contains("order.events")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(0.0)
            })
            .then_some(())
    })
    .await;
    stop.cancel();
}

#[tokio::test]
async fn an_event_that_concerns_nothing_here_is_counted_as_ignored_and_leaves_no_record() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(0);
    let (runtime, stop) = consuming_runtime("unconcerned", &broker, handler.clone()).await;
    let order = Uuid::now_v7();
    // Same key, so same partition: the marker is handled after the others, alone or with
    // them in a batch.
    let events = [
        confirmed(order, UNCONCERNED),
        confirmed(order, UNCONCERNED),
        confirmed(order, 8),
    ];
    for e in &events {
        produce(&broker, &e.key(), e.to_json().as_bytes()).await;
    }
    good_event_handled(&runtime).await;
    assert_eq!(
        handled(&runtime).await,
        1,
        "only the event it applied is recorded"
    );
    assert_eq!(
        runtime
            .metrics
            .sample("events_ignored_total", &[("topic", "order.events")]),
        2.0
    );
    assert_eq!(
        handler.attempts.load(Ordering::SeqCst),
        1,
        "the handler never saw them"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_resting_consumer_takes_what_landed_during_its_rest_in_one_burst_and_loses_none() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(0);
    let rest = Duration::from_secs(2);
    let (runtime, stop) =
        consuming_runtime_resting("rest", &broker, handler.clone(), |_| {}, rest).await;
    // One order, one partition: the first event starts a burst, and its rest with it.
    let order = Uuid::now_v7();
    produce_event(&broker, &confirmed(order, 1)).await;
    good_event_handled(&runtime).await;
    // Events 50 ms apart: a consumer that did not rest would take each with a fetch of its
    // own, alone; a resting one finds them all waiting when its rest ends.
    for n in 2..=8 {
        produce_event(&broker, &confirmed(order, n)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("every event handled", Duration::from_secs(30), || async {
        (effects(&runtime).await == 8).then_some(())
    })
    .await;
    assert_eq!(
        totals_applied(&runtime).await,
        (1..=8).collect::<Vec<_>>(),
        "each event applied once"
    );
    assert!(
        handler.largest_batch() >= 4,
        "the events that landed during the rest were taken together: {:?}",
        handler.batches.lock().expect("lock")
    );
    stop.cancel();
}

#[tokio::test]
async fn a_resting_consumer_behind_takes_its_backlog_without_resting_until_it_has_caught_up() {
    let broker = Broker::start().await.expect("broker");
    // More than a rest's worth, all there before it starts (totals 1,000 to 1,999: none the
    // handler or the database refuses).
    let order = Uuid::now_v7();
    let backlog: Vec<Envelope> = (1_000..2_000).map(|n| confirmed(order, n)).collect();
    produce_events(&broker, &backlog).await;
    // A rest far longer than the wait below: one rest before the backlog is taken fails it.
    let rest = Duration::from_secs(60);
    let handler = CountingHandler::failing_first(0);
    let (runtime, stop) =
        consuming_runtime_resting("backlog", &broker, handler, |_| {}, rest).await;
    eventually("the backlog handled", Duration::from_secs(45), || async {
        (effects(&runtime).await == 1_000).then_some(())
    })
    .await;
    assert_eq!(
        totals_applied(&runtime).await,
        (1_000..2_000).collect::<Vec<_>>()
    );
    stop.cancel();
}

#[tokio::test]
async fn events_are_handled_while_requests_hold_every_connection_of_the_http_pool() {
    let broker = Broker::start().await.expect("broker");
    let (runtime, stop) =
        consuming_runtime("pools", &broker, CountingHandler::failing_first(0)).await;
    // What a flood of slow requests does: every connection the HTTP handlers may open is taken.
    let size = runtime.settings.database.http_max_connections as usize;
    let mut held = Vec::with_capacity(size);
    for _ in 0..size {
        held.push(runtime.http_db.acquire().await.expect("an HTTP connection"));
    }
    let envelope = confirmed(Uuid::now_v7(), 7);
    produce(&broker, &envelope.key(), envelope.to_json().as_bytes()).await;
    good_event_handled(&runtime).await;
    assert_eq!(
        runtime.http_db.size() as usize,
        size,
        "the HTTP pool stayed at its cap"
    );
    drop(held);
    stop.cancel();
}

#[tokio::test]
async fn a_burst_is_handled_in_batches_and_a_poison_event_in_it_harms_none_of_its_neighbours() {
    let broker = Broker::start().await.expect("broker");
    // Everything is on the topic before the consumer starts, so it arrives in batches.
    let order = Uuid::now_v7();
    // Totals 100 to 299: none of them one the handler or the database refuses; more than
    // one batch, so that the batches after the poison event's commit together.
    let mut burst: Vec<Envelope> = (100..300).map(|n| confirmed(order, n)).collect();
    burst.insert(20, confirmed(order, IMPOSSIBLE));
    let duplicate = burst[5].clone();
    burst.insert(30, duplicate);
    for envelope in &burst {
        produce(&broker, &envelope.key(), envelope.to_json().as_bytes()).await;
    }
    let handler = CountingHandler::failing_first(0);
    let (runtime, stop) = consuming_runtime("burst", &broker, handler).await;
    eventually(
        "the 200 good events handled",
        Duration::from_secs(60),
        || async { (effects(&runtime).await == 200).then_some(()) },
    )
    .await;
    let dlq = contract::topics::dlq_topic(SERVICE);
    let letters = read_topic(&broker.brokers, &dlq, Duration::from_secs(20), |r| {
        !r.is_empty()
    })
    .await
    .expect("read the dead letters");
    assert_eq!(letters.len(), 1, "only the poison event is a dead letter");
    assert_eq!(
        totals_applied(&runtime).await,
        (100..300).collect::<Vec<_>>(),
        "each good event applied once"
    );
    assert_eq!(handled(&runtime).await, 200);
    assert!(
        runtime
            .metrics
            .sample("consumer_batches_total", &[("consumer", SERVICE)])
            >= 1.0,
        "some of the burst was handled in one transaction"
    );
    stop.cancel();
}

/// Records the partition and offset of every event it applies, in the order it applies them,
/// and holds the event whose total is [`GATE`] until the gate opens.
#[derive(Clone, Default)]
struct GatedHandler {
    applied: Arc<std::sync::Mutex<Vec<(i32, i64)>>>,
    reached: Arc<AtomicBool>,
    open: Arc<tokio::sync::Notify>,
}

const GATE: i64 = 4242;

impl Handler for GatedHandler {
    async fn handle(&self, _conn: &mut Conn, event: &Inbound) -> Result<(), HandleError> {
        if let contract::Event::OrderConfirmed(confirmed) = &event.envelope.event
            && confirmed.total_amount == GATE
        {
            let opened = self.open.notified();
            self.reached.store(true, Ordering::SeqCst);
            opened.await;
        }
        self.applied
            .lock()
            .expect("lock")
            .push((event.partition, event.offset));
        Ok(())
    }
}

#[tokio::test]
async fn a_partition_stuck_in_its_handler_holds_back_none_of_the_others_and_each_keeps_its_order() {
    // SQLite has one writer: a transaction held open blocks every other, by design.
    if testkit::sqlite_backend() {
        return;
    }
    let broker = Broker::start().await.expect("broker");
    // The gated event first, then events of many orders, spread over every partition (each
    // a valid event: user ids start at 1).
    let gated_order = Uuid::now_v7();
    let mut events = vec![confirmed(gated_order, GATE)];
    for n in 1..=60 {
        let order = if n % 4 == 0 {
            gated_order
        } else {
            Uuid::now_v7()
        };
        events.push(confirmed(order, n));
    }
    for envelope in &events {
        produce(&broker, &envelope.key(), envelope.to_json().as_bytes()).await;
    }
    let on_topic = read_topic(
        &broker.brokers,
        topics::ORDER_EVENTS,
        Duration::from_secs(20),
        |r| r.len() >= events.len(),
    )
    .await
    .expect("read");
    assert_eq!(on_topic.len(), events.len());
    let gate = on_topic
        .iter()
        .find(|r| r.key == gated_order.to_string())
        .map(|r| (r.partition, r.offset))
        .expect("the gated event");
    let elsewhere = on_topic.iter().filter(|r| r.partition != gate.0).count();
    assert!(elsewhere > 0, "some events are on other partitions");

    let handler = GatedHandler::default();
    let runtime = runtime("gated", &broker).await;
    let consumer = runtime.consumer(&[topics::ORDER_EVENTS], handler.clone());
    let stop = CancellationToken::new();
    tokio::spawn(consumer.run(stop.clone()));

    let applied = || handler.applied.lock().expect("lock").clone();
    eventually(
        "every event of the other partitions applied while one partition is stuck",
        Duration::from_secs(30),
        || async {
            let done = applied().iter().filter(|(p, _)| *p != gate.0).count();
            (handler.reached.load(Ordering::SeqCst) && done == elsewhere).then_some(())
        },
    )
    .await;
    assert!(
        applied()
            .iter()
            .all(|(p, offset)| *p != gate.0 || *offset < gate.1),
        "nothing after the stuck event on its partition was applied"
    );

    handler.open.notify_one();
    eventually("every event applied", Duration::from_secs(30), || async {
        (applied().len() == events.len()).then_some(())
    })
    .await;
    let applied = applied();
    for partition in 0..3 {
        let offsets: Vec<i64> = applied
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, offset)| *offset)
            .collect();
        let mut sorted = offsets.clone();
        sorted.sort();
        assert_eq!(
            offsets, sorted,
            "partition {partition} is applied in offset order"
        );
    }
    stop.cancel();
}

#[tokio::test]
async fn messages_that_can_never_be_processed_are_dead_lettered_and_the_partition_moves_on() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(0);
    let (runtime, stop) = consuming_runtime("poison", &broker, handler).await;
    let order = Uuid::now_v7();
    let good = confirmed(order, 1);
    let key = good.key();
    // Same key, so same partition: the good event sits behind the bad ones.
    let bad: [&[u8]; 3] = [
        b"\xff\x00 not json",
        b"{\"event_type\":\"OrderConfirmed\"}",
        b"[]",
    ];
    for payload in bad {
        produce_raw(
            &broker.brokers,
            topics::ORDER_EVENTS,
            &key,
            payload,
            &[("traceparent", "x")],
        )
        .await
        .expect("produce");
    }
    let impossible = confirmed(order, IMPOSSIBLE);
    let unknown = br#"{"event_id":"0193a0c4-0000-7000-8000-000000000001","event_type":"ParcelShipped","schema_version":1,"occurred_at":"2026-11-24T08:00:00Z","producer":"x","payload":{}}"#;
    for payload in [
        impossible.to_json().as_bytes(),
        unknown,
        good.to_json().as_bytes(),
    ] {
        produce(&broker, &key, payload).await;
    }
    good_event_handled(&runtime).await;
    assert_eq!(
        runtime
            .metrics
            .sample("events_ignored_total", &[("topic", "order.events")]),
        1.0
    );
    assert_eq!(
        runtime.metrics.sample(
            "events_dead_lettered_total",
            &[("consumer", SERVICE), ("reason", "envelope")]
        ),
        3.0,
        "the three messages that are no envelope, counted by their reason"
    );
    assert_eq!(
        runtime.metrics.sample(
            "events_dead_lettered_total",
            &[("consumer", SERVICE), ("reason", "rejected")]
        ),
        1.0,
        "the event the handler refuses"
    );

    let dlq = contract::topics::dlq_topic(SERVICE);
    let letters = read_topic(&broker.brokers, &dlq, Duration::from_secs(20), |r| {
        r.len() >= 4
    })
    .await
    .expect("read");
    assert_eq!(
        letters.len(),
        4,
        "three unreadable messages and one the handler refused"
    );
    for letter in &letters {
        assert_eq!(letter.key, key, "the original key is kept");
        assert_eq!(
            letter.header("dlq.source.topic"),
            Some(topics::ORDER_EVENTS)
        );
        assert_eq!(letter.header("dlq.consumer"), Some(SERVICE));
        assert!(
            letter
                .header("dlq.source.offset")
                .is_some_and(|o| o.parse::<i64>().is_ok())
        );
        assert!(letter.header("dlq.error").is_some_and(|e| !e.is_empty()));
        assert!(letter.header("dlq.failed_at").is_some());
    }
    assert_eq!(
        letters[0].header("traceparent"),
        Some("x"),
        "original headers are kept"
    );
    assert_eq!(
        letters[3].envelope.as_ref(),
        Some(&impossible),
        "the original value is kept"
    );
    assert!(
        letters[3]
            .header("dlq.error")
            .is_some_and(|e| e.contains("never be right"))
    );
    stop.cancel();
}

#[tokio::test]
async fn a_transient_failure_is_retried_until_the_event_is_applied() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(3);
    let (runtime, stop) = consuming_runtime("retry", &broker, handler.clone()).await;
    let envelope = confirmed(Uuid::now_v7(), 3);
    produce(&broker, &envelope.key(), envelope.to_json().as_bytes()).await;
    eventually("the event applied", Duration::from_secs(30), || async {
        (effects(&runtime).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        handler.attempts.load(Ordering::SeqCst),
        4,
        "three failures, then success"
    );
    assert_eq!(
        handled(&runtime).await,
        1,
        "failed attempts left no record behind"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_database_url_of_another_kind_is_refused_clearly() {
    let error = connect_and_migrate(
        "test",
        &DatabaseSettings::new("mysql://x/y"),
        &[&eventing::runtime::MIGRATIONS],
    )
    .await
    .expect_err("refused");
    assert!(error.to_string().contains("postgres://"), "{error}");
}

#[tokio::test]
async fn a_dead_letter_replayed_after_the_fix_is_applied_once_however_often_it_is_replayed() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(0);
    let (runtime, stop) = consuming_runtime("replay", &broker, handler.clone()).await;
    let impossible = confirmed(Uuid::now_v7(), IMPOSSIBLE);
    produce(&broker, &impossible.key(), impossible.to_json().as_bytes()).await;
    let dead_lettered = || {
        runtime.metrics.sample(
            "events_dead_lettered_total",
            &[("consumer", SERVICE), ("reason", "rejected")],
        )
    };
    eventually(
        "the event dead-lettered",
        Duration::from_secs(30),
        || async { (dead_lettered() == 1.0).then_some(()) },
    )
    .await;

    handler.refuse_impossible.store(false, Ordering::SeqCst);
    let settings = runtime.settings.kafka.clone();
    let letters = tokio::task::spawn_blocking(move || ops::dlq::list(&settings, SERVICE))
        .await
        .expect("join")
        .expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].event_id.as_deref(),
        Some(impossible.event_id.to_string().as_str())
    );
    assert_eq!(letters[0].source_topic, topics::ORDER_EVENTS);
    assert_eq!(letters[0].replayed_at, None);
    for _ in 0..2 {
        let replayed = ops::dlq::replay(
            &runtime.settings.kafka,
            &runtime.producer.get(),
            SERVICE,
            &letters,
        )
        .await
        .expect("replay");
        assert_eq!(
            replayed,
            [ops::dlq::Replayed::Republished {
                topic: topics::ORDER_EVENTS.into(),
                partition: letters[0].source_partition.parse().expect("a partition"),
            }]
        );
    }
    // Each replay is recorded; the letter stays, marked.
    let settings = runtime.settings.kafka.clone();
    let after = tokio::task::spawn_blocking(move || ops::dlq::list(&settings, SERVICE))
        .await
        .expect("join")
        .expect("list");
    assert_eq!(after.len(), 1, "a record of a replay is not a letter");
    assert!(after[0].replayed_at.is_some());
    eventually(
        "the replayed event applied, and its second replay seen",
        Duration::from_secs(30),
        || async {
            let duplicates = runtime.metrics.sample(
                "events_duplicate_total",
                &[("topic", "order.events"), ("event_type", "OrderConfirmed")],
            );
            (effects(&runtime).await == 1 && duplicates == 1.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        dead_lettered(),
        1.0,
        "nothing went back to the dead-letter topic"
    );
    stop.cancel();
}

/// Writes a dead letter of [`SERVICE`] as anyone who may write its dead-letter topic could:
/// `payload` under `key`, claiming to come from `source` (`topic`, partition, offset).
async fn forge_letter(broker: &Broker, key: &str, payload: &str, source: (&str, i32, i64)) {
    let (partition, offset) = (source.1.to_string(), source.2.to_string());
    produce_raw(
        &broker.brokers,
        &contract::topics::dlq_topic(SERVICE),
        key,
        payload.as_bytes(),
        &[
            ("dlq.error", "forged"),
            ("dlq.stage", "consume"),
            ("dlq.source.topic", source.0),
            ("dlq.source.partition", &partition),
            ("dlq.source.offset", &offset),
        ],
    )
    .await
    .expect("produce");
}

#[tokio::test]
async fn a_dead_letter_goes_back_only_to_a_topic_its_service_consumes_and_only_as_it_was_there() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("replay_forged", &broker).await;
    let dlq = (contract::topics::dlq_topic(SERVICE), 1, false);
    ops::topics::ensure_topics(&runtime.settings.kafka, &[dlq])
        .await
        .expect("dead-letter topic");
    // One real event on order.events, which the letters below point at.
    let order = Uuid::now_v7();
    let real = confirmed(order, 1);
    produce(&broker, &real.key(), real.to_json().as_bytes()).await;
    let on_topic = first_message(&broker, topics::ORDER_EVENTS).await;
    let (partition, offset) = (on_topic.partition, on_topic.offset);
    let price = Envelope::new(
        "product-service",
        contract::ProductUpserted {
            product_id: 1,
            name: "Mug".into(),
            price: 0,
        },
        None,
    );
    let other = confirmed(order, 2);
    let at_real = (topics::ORDER_EVENTS, partition, offset);
    let forged = [
        (
            "1".to_owned(),
            price.to_json(),
            (topics::PRODUCT_CATALOG, 0, 0),
        ),
        ("1".to_owned(), price.to_json(), at_real),
        (other.key(), other.to_json(), at_real),
        (real.key(), real.to_json(), at_real),
    ];
    for (key, payload, source) in &forged {
        forge_letter(&broker, key, payload, *source).await;
    }

    let settings = runtime.settings.kafka.clone();
    let letters = tokio::task::spawn_blocking(move || ops::dlq::list(&settings, SERVICE))
        .await
        .expect("join")
        .expect("list");
    assert_eq!(letters.len(), 4);
    let outcomes = ops::dlq::replay(
        &runtime.settings.kafka,
        &runtime.producer.get(),
        SERVICE,
        &letters,
    )
    .await
    .expect("replay");
    let refused = |n: usize| match &outcomes[n] {
        ops::dlq::Replayed::Refused(reason) => reason.clone(),
        other => panic!("letter {n} was replayed: {other:?}"),
    };
    assert!(
        refused(0).contains("does not consume \"product.catalog\""),
        "{}",
        refused(0)
    );
    assert!(
        refused(1).contains("it would be refused again"),
        "{}",
        refused(1)
    );
    assert!(refused(2).contains("is not this one"), "{}", refused(2));
    assert_eq!(
        outcomes[3],
        ops::dlq::Replayed::Republished {
            topic: topics::ORDER_EVENTS.into(),
            partition
        },
        "a copy of what is on the topic may go back"
    );

    // Nothing reached the catalog, and order.events holds the real event twice, the second
    // time naming the letter it was replayed from.
    let settings = runtime.settings.kafka.clone();
    let catalog = tokio::task::spawn_blocking(move || {
        ops::read::read_to_end(
            &settings,
            &[topics::PRODUCT_CATALOG],
            Duration::from_secs(10),
        )
    })
    .await
    .expect("join")
    .expect("read");
    assert!(catalog.is_empty(), "{catalog:?}");
    let on_topic = read_topic(
        &broker.brokers,
        topics::ORDER_EVENTS,
        Duration::from_secs(20),
        |r| r.len() >= 2,
    )
    .await
    .expect("read");
    assert_eq!(on_topic.len(), 2);
    let replay_of = format!(
        "{}@{}",
        contract::topics::dlq_topic(SERVICE),
        letters[3].offset
    );
    assert_eq!(on_topic[1].header("replay-of"), Some(replay_of.as_str()));
    assert_eq!(on_topic[1].envelope.as_ref(), Some(&real));
}

#[tokio::test]
async fn a_row_the_broker_can_never_take_is_parked_and_holds_back_its_key_but_no_other() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("park", &broker).await;
    let huge = Envelope::new(
        SERVICE,
        contract::ProductUpserted {
            product_id: 1,
            name: "x".repeat(2_000_000),
            price: 1,
        },
        None,
    );
    let fine = Envelope::new(
        SERVICE,
        contract::ProductUpserted {
            product_id: 1,
            name: "Mug".into(),
            price: 1,
        },
        None,
    );
    let other = Envelope::new(
        SERVICE,
        contract::ProductUpserted {
            product_id: 2,
            name: "Tea".into(),
            price: 1,
        },
        None,
    );
    enqueue_committed(&runtime, &[huge, fine.clone(), other.clone()]).await;
    let stop = CancellationToken::new();
    tokio::spawn(runtime.relay("relay-a".into()).run(stop.clone()));
    let read = first_message(&broker, topics::PRODUCT_CATALOG).await;
    // Another key goes on; the parked row's key waits behind it, so that no consumer ever
    // sees its later events before it.
    assert_eq!(read.envelope.as_ref(), Some(&other));
    eventually("the huge row parked", Duration::from_secs(10), || async {
        (outbox::parked(&runtime.db).await.expect("parked") == 1).then_some(())
    })
    .await;
    assert!(
        !sent(&runtime, &fine).await,
        "the row behind it is held back"
    );
    // Later rounds change nothing: the key stays held, and shows in the backlog. A row of
    // another key committed now marks them: once it is sent, the relay has been through
    // the held row again and left it.
    let marker = Envelope::new(
        SERVICE,
        contract::ProductUpserted {
            product_id: 3,
            name: "Lamp".into(),
            price: 1,
        },
        None,
    );
    enqueue_committed(&runtime, std::slice::from_ref(&marker)).await;
    eventually(
        "a later row of another key sent",
        Duration::from_secs(10),
        || async { sent(&runtime, &marker).await.then_some(()) },
    )
    .await;
    assert!(!sent(&runtime, &fine).await);
    assert_eq!(
        unsent(&runtime).await,
        1,
        "the parked row is not part of the backlog; the row held behind it is"
    );
    assert_eq!(runtime.metrics.sample("outbox_parked_total", &[]), 1.0);
    let reason: String =
        sqlx::query_scalar("SELECT park_reason FROM outbox_message WHERE parked_at IS NOT NULL")
            .fetch_one(&runtime.db)
            .await
            .expect("reason");
    assert!(reason.to_lowercase().contains("too large"), "{reason}");
    stop.cancel();
}

#[tokio::test]
async fn rows_past_retention_are_deleted_and_nothing_unsent_is() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("retention", &broker).await;
    let now = kit::now_ms();
    let day = 86_400_000;
    for (id, processed_at) in [("old", now - 10 * day), ("new", now - day)] {
        sqlx::query("INSERT INTO processed_event (event_id, event_type, topic, processed_at) VALUES ($1, 'X', 't', $2)")
            .bind(id)
            .bind(processed_at)
            .execute(&runtime.db)
            .await
            .expect("insert");
    }
    for (key, sent_at) in [
        ("sent-long-ago", Some(now - 3 * day)),
        ("sent-just-now", Some(now)),
        ("never-sent", None),
    ] {
        sqlx::query(
            "INSERT INTO outbox_message (topic, message_key, payload, headers, created_at, sent_at) \
             VALUES ('t', $1, '{}', '{}', $2, $3)",
        )
        .bind(key)
        .bind(now - 5 * day)
        .bind(sent_at)
        .execute(&runtime.db)
        .await
        .expect("insert");
    }
    let settings = eventing::housekeeping::RetentionSettings::default();
    let deleted = eventing::housekeeping::sweep(&runtime.db, &settings, now)
        .await
        .expect("sweep");
    assert_eq!(deleted, (1, 1));
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT message_key FROM outbox_message ORDER BY id")
            .fetch_all(&runtime.db)
            .await
            .expect("keys");
    assert_eq!(keys, ["sent-just-now", "never-sent"]);
    let ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM processed_event")
        .fetch_all(&runtime.db)
        .await
        .expect("ids");
    assert_eq!(ids, ["new"]);
}

#[tokio::test]
async fn an_event_its_handler_panics_on_is_dead_lettered_at_once_and_the_partition_goes_on() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(0);
    let (runtime, stop) = consuming_runtime("panics", &broker, handler).await;
    let order = Uuid::now_v7();
    for total in [PANICS, 1] {
        let event = confirmed(order, total);
        produce(&broker, &event.key(), event.to_json().as_bytes()).await;
    }
    eventually(
        "the next event applied",
        Duration::from_secs(30),
        || async { (effects(&runtime).await == 1).then_some(()) },
    )
    .await;
    let letter = first_message(&broker, &contract::topics::dlq_topic(SERVICE)).await;
    assert!(
        letter
            .header("dlq.error")
            .is_some_and(|e| e.starts_with("the handler panicked: ")),
        "{letter:?}"
    );
    let labels = [("consumer", SERVICE), ("reason", "rejected")];
    assert_eq!(
        runtime
            .metrics
            .sample("events_dead_lettered_total", &labels),
        1.0
    );
    // The worker lived on: nothing made the consumer rejoin.
    let rejoined = [("consumer", SERVICE), ("reason", "worker_ended")];
    assert_eq!(
        runtime.metrics.sample("consumer_rejoins_total", &rejoined),
        0.0
    );
    stop.cancel();
}

#[tokio::test]
async fn a_partition_whose_worker_is_behind_is_paused_while_the_others_go_on_and_a_revoke_drops_its_queue()
 {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(0);
    // A queue of 256 messages per partition, so that 400 fill it.
    let (runtime, stop) = consuming_runtime_with("paused", &broker, handler.clone(), |kafka| {
        kafka.partition_queue = 256;
    })
    .await;
    // More messages of one order than its worker's queue holds, its first one failing as long
    // as the database is "away"; then one event each of other orders, produced after them.
    let stuck = Uuid::now_v7();
    let mut events = vec![confirmed(stuck, STUCK)];
    events.extend((0..400).map(|n| confirmed(stuck, 100 + n)));
    for event in &events {
        produce(&broker, &event.key(), event.to_json().as_bytes()).await;
    }
    let stuck_partition = first_message(&broker, topics::ORDER_EVENTS).await.partition;
    let mut others = Vec::new();
    while others.len() < 20 {
        let event = confirmed(Uuid::now_v7(), 1);
        produce(&broker, &event.key(), event.to_json().as_bytes()).await;
        others.push(event);
    }
    let elsewhere = read_topic(
        &broker.brokers,
        topics::ORDER_EVENTS,
        Duration::from_secs(20),
        |r| r.len() >= events.len() + others.len(),
    )
    .await
    .expect("read")
    .iter()
    .filter(|r| r.partition != stuck_partition)
    .count() as i64;
    let paused = || {
        let labels = [("consumer", SERVICE)];
        runtime
            .metrics
            .sample("consumer_partitions_paused_total", &labels)
    };
    eventually(
        "the stuck partition paused and every other partition's events handled",
        Duration::from_secs(60),
        || async {
            let handled: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM effect WHERE total = 1")
                .fetch_one(&runtime.db)
                .await
                .expect("count");
            (paused() >= 1.0 && handled == elsewhere).then_some(())
        },
    )
    .await;

    // A second member joins: the rebalance revokes every partition of the first, which drops
    // what it had taken of the stuck one rather than handle it after its new owner.
    let second = runtime.consumer(&[topics::ORDER_EVENTS], handler.clone());
    tokio::spawn(second.run(stop.clone()));
    let dropped = || {
        runtime
            .metrics
            .sample("consumer_messages_dropped_total", &[("consumer", SERVICE)])
    };
    eventually(
        "queued messages dropped on the revoke",
        Duration::from_secs(60),
        || async { (dropped() > 0.0).then_some(()) },
    )
    .await;

    // The database comes back: every event is applied exactly once, the stuck order's in
    // order behind its first.
    handler.stuck.store(false, Ordering::SeqCst);
    let total = (events.len() + others.len()) as i64;
    eventually(
        "every event applied once",
        Duration::from_secs(90),
        || async { (effects(&runtime).await == total).then_some(()) },
    )
    .await;
    stop.cancel();
}

#[tokio::test]
async fn poison_events_of_every_kind_are_dead_lettered_with_their_reason_and_the_next_is_handled() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(0);
    let (runtime, stop) = consuming_runtime("poison_kinds", &broker, handler.clone()).await;
    let order = Uuid::now_v7();
    let key = order.to_string();
    let event = |event_type: &str, payload: serde_json::Value| {
        serde_json::json!({
            "event_id": Uuid::now_v7(), "event_type": event_type, "schema_version": 1,
            "occurred_at": "2026-11-25T08:00:00Z", "producer": "order-service", "order_id": order,
            "payload": payload,
        })
        .to_string()
    };
    // Every one of these decodes as JSON of the right shape but breaks a rule of the contract,
    // or is refused by the database; all sit before a good event in one partition.
    let poison = [
        event(
            "OrderConfirmed",
            serde_json::json!({"order_id": order, "user_id": 1, "total_amount": 100,
                "discount_amount": 150, "final_amount": -50, "confirmed_at": "2026-11-25T08:00:00Z"}),
        ),
        event(
            "OrderCreated",
            serde_json::json!({"order_id": order, "user_id": 1, "total_amount": 0,
                "items": [{"product_id": 1, "quantity": 0, "unit_price": 5}],
                "created_at": "2026-11-25T08:00:00Z"}),
        ),
        event(
            "OrderCancelled",
            serde_json::json!({"order_id": order, "user_id": 1, "reason": "TIMEOUT",
                "detail": "late\u{0}", "cancelled_at": "2026-11-25T08:00:00Z"}),
        ),
        event(
            "OrderCancelled",
            serde_json::json!({"order_id": order, "user_id": 1, "reason": "BORED",
                "detail": "", "cancelled_at": "2026-11-25T08:00:00Z"}),
        ),
        confirmed(order, REFUSED_BY_DATABASE).to_json(),
    ];
    for payload in &poison {
        produce(&broker, &key, payload.as_bytes()).await;
    }
    let good = confirmed(order, 5);
    produce(&broker, &key, good.to_json().as_bytes()).await;
    good_event_handled(&runtime).await;
    let dlq = contract::topics::dlq_topic(SERVICE);
    let letters = read_topic(&broker.brokers, &dlq, Duration::from_secs(20), |r| {
        r.len() >= 5
    })
    .await
    .expect("read");
    let reasons: Vec<&str> = letters
        .iter()
        .filter_map(|l| l.header("dlq.error"))
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(
        reasons[0].contains("discount_amount must be at most the total"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("items[0].quantity must be positive"),
        "{}",
        reasons[1]
    );
    assert!(reasons[2].contains("NUL"), "{}", reasons[2]);
    assert!(reasons[3].contains("BORED"), "{}", reasons[3]);
    assert!(
        reasons[4].contains("the database refuses"),
        "{}",
        reasons[4]
    );
    assert_eq!(
        runtime.metrics.sample(
            "events_retried_total",
            &[("topic", "order.events"), ("event_type", "OrderConfirmed")]
        ),
        0.0,
        "a constraint violation is not retried"
    );
    stop.cancel();
}

/// An envelope of `total` padded (with a field consumers ignore) to about `bytes` bytes.
fn padded(order: Uuid, total: i64, bytes: usize) -> String {
    let mut json: serde_json::Value =
        serde_json::from_str(&confirmed(order, total).to_json()).expect("json");
    let size = json.to_string().len();
    json["payload"]["padding"] = serde_json::json!("p".repeat(bytes.saturating_sub(size + 14)));
    json.to_string()
}

#[tokio::test]
async fn a_dead_letter_too_large_for_the_broker_is_trimmed_and_else_parked_never_retried_forever() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler::failing_first(0);
    let (runtime, stop) = consuming_runtime("dlq_too_large", &broker, handler).await;
    let order = Uuid::now_v7();
    // librdkafka refuses messages over 1,000,000 bytes (`message.max.bytes`): the first fits
    // once its 4 kB reason is trimmed, the second not even then.
    let trimmable = padded(order, LONG_REASON, 996_000);
    let hopeless = padded(order, IMPOSSIBLE, 999_900);
    for payload in [&trimmable, &hopeless] {
        produce(&broker, &order.to_string(), payload.as_bytes()).await;
    }
    let good = confirmed(order, 5);
    produce(&broker, &order.to_string(), good.to_json().as_bytes()).await;
    good_event_handled(&runtime).await;
    let dlq = contract::topics::dlq_topic(SERVICE);
    let letters = read_topic(&broker.brokers, &dlq, Duration::from_secs(20), |r| {
        !r.is_empty()
    })
    .await
    .expect("read");
    assert_eq!(letters.len(), 1, "only the trimmed one is on the topic");
    let reason = letters[0].header("dlq.error").expect("a reason");
    assert!(
        reason.len() <= 256 && reason.starts_with("a reason this long"),
        "{reason}"
    );
    let parked: (String, String) = sqlx::query_as("SELECT error, payload FROM dead_letter")
        .fetch_one(&runtime.db)
        .await
        .expect("one parked dead letter");
    assert!(parked.0.contains("never be right"));
    assert_eq!(
        hex::decode(parked.1).expect("hex"),
        hopeless.as_bytes(),
        "every byte kept"
    );
    assert_eq!(
        runtime
            .metrics
            .sample("dead_letters_parked_total", &[("consumer", SERVICE)]),
        1.0
    );
    stop.cancel();
}

/// A service with no API of its own on a free port: health and metrics only, and whatever
/// workers the test adds.
async fn bare_app(runtime: &Runtime) -> kit::App {
    let listener = kit::App::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    runtime.bare_app(listener, axum::Router::new())
}

/// Triggers a fatal error in a producer, as librdkafka's test hook allows.
#[allow(unsafe_code)]
fn make_fatal(producer: &eventing::kafka::Producer) {
    let reason = std::ffi::CString::new("fatal error triggered by a test").expect("c string");
    // SAFETY: the pointer is a live client owned by `producer`, and the hook only raises an
    // error on it.
    unsafe {
        rdkafka_sys::rd_kafka_test_fatal_error(
            producer.client().native_ptr(),
            rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        );
    }
}

async fn readiness(http: &reqwest::Client, app: &kit::RunningApp) -> (u16, serde_json::Value) {
    let response = http
        .get(app.url("/health/ready"))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn a_fatal_producer_error_makes_the_service_not_ready_until_the_producer_is_replaced() {
    let broker = Broker::start().await.expect("broker");
    let mut runtime = runtime("fatal", &broker).await;
    // A long poll, so that the relay notices only when the next commit wakes it.
    runtime.settings.relay.poll_interval = Duration::from_secs(60);
    let app = bare_app(&runtime).await.with_relay(&runtime).spawn();
    let http = reqwest::Client::new();
    eventually("ready", Duration::from_secs(20), || async {
        (readiness(&http, &app).await.0 == 200).then_some(())
    })
    .await;
    let before = confirmed(Uuid::now_v7(), 1);
    enqueue_committed(&runtime, std::slice::from_ref(&before)).await;
    eventually(
        "the first event published",
        Duration::from_secs(20),
        || async { (unsent(&runtime).await == 0).then_some(()) },
    )
    .await;

    make_fatal(&runtime.producer.get());
    let (status, body) = readiness(&http, &app).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["failing"]["producer"]
            .as_str()
            .is_some_and(|r| r.contains("fatal")),
        "{body}"
    );

    let after = confirmed(Uuid::now_v7(), 2);
    enqueue_committed(&runtime, std::slice::from_ref(&after)).await;
    eventually(
        "the next event published by a new producer",
        Duration::from_secs(30),
        || async { (unsent(&runtime).await == 0).then_some(()) },
    )
    .await;
    assert_eq!(
        runtime
            .metrics
            .sample("producer_replacements_total", &[("reason", "fatal")]),
        1.0
    );
    eventually("ready again", Duration::from_secs(20), || async {
        (readiness(&http, &app).await.0 == 200).then_some(())
    })
    .await;
    let read = read_topic(
        &broker.brokers,
        topics::ORDER_EVENTS,
        Duration::from_secs(20),
        |r| r.len() >= 2,
    )
    .await
    .expect("read");
    let ids: Vec<_> = read
        .iter()
        .filter_map(|r| r.envelope.as_ref().map(|e| e.event_id))
        .collect();
    assert!(
        ids.contains(&before.event_id) && ids.contains(&after.event_id),
        "{ids:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_worker_that_stops_stops_the_service_with_an_error() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("worker_stops", &broker).await;
    let app = bare_app(&runtime)
        .await
        .worker("sweeper", |_shutdown| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
        .spawn();
    let ended = tokio::time::timeout(Duration::from_secs(10), app.stopped())
        .await
        .expect("the service stops by itself");
    let error = ended.expect_err("with an error");
    assert!(
        error.to_string().contains("the sweeper worker stopped"),
        "{error:#}"
    );

    let app = bare_app(&runtime)
        .await
        .worker("panicky", |_shutdown| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            panic!("a bug");
        })
        .spawn();
    let ended = tokio::time::timeout(Duration::from_secs(10), app.stopped())
        .await
        .expect("the service stops by itself");
    assert!(
        ended
            .expect_err("with an error")
            .to_string()
            .contains("panicked")
    );
}

#[tokio::test]
async fn a_consumer_is_not_ready_until_its_group_gives_it_a_partition() {
    use kit::health::PartState;
    let broker = Broker::start().await.expect("broker");
    // A consumer that reaches no broker is never given a partition: not ready from its start.
    let mut cut_off = runtime("not_joined", &broker).await;
    cut_off.settings.kafka.brokers = format!("127.0.0.1:{}", testkit::free_port());
    let consumer = cut_off.consumer(&[topics::ORDER_EVENTS], CountingHandler::failing_first(0));
    let stop = CancellationToken::new();
    tokio::spawn(consumer.run(stop.clone()));
    let state = eventually(
        "the consumer says how it is",
        Duration::from_secs(10),
        || async { cut_off.health.state(eventing::consumer::HEALTH_PART) },
    )
    .await;
    assert!(
        matches!(&state, PartState::Failing { reason, .. } if reason.contains("has not been given a partition")),
        "{state:?}"
    );
    // One its group gives partitions to is ready, and holds them.
    let (joined, joined_stop) =
        consuming_runtime("joined", &broker, CountingHandler::failing_first(0)).await;
    eventually("ready", Duration::from_secs(30), || async {
        (joined.health.state(eventing::consumer::HEALTH_PART) == Some(PartState::Up)).then_some(())
    })
    .await;
    assert!(
        joined
            .metrics
            .sample("consumer_partitions", &[("consumer", SERVICE)])
            >= 1.0
    );
    stop.cancel();
    joined_stop.cancel();
}

#[tokio::test]
async fn a_member_left_without_a_partition_by_a_full_group_is_a_ready_spare_and_never_rejoins() {
    let broker = Broker::start().await.expect("broker");
    // One partition for two members: one of them holds nothing, and needs to hold nothing.
    let topic = format!("watchdog-{}", Uuid::new_v4().simple());
    let settings = eventing::kafka::KafkaSettings::new(&broker.brokers);
    ops::topics::ensure_topics(&settings, &[(topic.clone(), 1, false)])
        .await
        .expect("topic");
    let bound = Duration::from_secs(3);
    let mut members = Vec::new();
    for n in 0..2 {
        let mut runtime = runtime(&format!("watchdog{n}"), &broker).await;
        runtime.settings.kafka.watchdog = Some(bound);
        runtime.settings.kafka.session_timeout = Duration::from_secs(6);
        let consumer = runtime.consumer(&[topic.as_str()], CountingHandler::failing_first(0));
        let stop = CancellationToken::new();
        tokio::spawn(consumer.run(stop.clone()));
        members.push((runtime, stop));
    }
    let gauge =
        |runtime: &Runtime, name: &str| runtime.metrics.sample(name, &[("consumer", SERVICE)]);
    // One holds the partition and the other is a spare (which is which may change while the
    // group settles).
    let settled = || {
        let looks: Vec<(f64, f64)> = members
            .iter()
            .map(|(r, _)| (gauge(r, "consumer_partitions"), gauge(r, "consumer_spare")))
            .collect();
        looks.contains(&(1.0, 0.0)) && looks.contains(&(0.0, 1.0))
    };
    eventually(
        "one member holds the partition, the other is a spare",
        Duration::from_secs(30),
        || async { settled().then_some(()) },
    )
    .await;
    // Twice the watchdog's bound later, the spare has neither rejoined nor been reported. (A
    // member may have rejoined while the group was still forming, before anyone was a spare.)
    let labels = [("consumer", SERVICE), ("reason", "no_partitions")];
    let rejoins = |runtime: &Runtime| runtime.metrics.sample("consumer_rejoins_total", &labels);
    let before: Vec<f64> = members.iter().map(|(r, _)| rejoins(r)).collect();
    tokio::time::sleep(2 * bound).await;
    assert!(settled());
    for ((runtime, _), before) in members.iter().zip(before) {
        assert_eq!(rejoins(runtime), before, "no rejoin once settled");
        assert_eq!(
            runtime.health.state(eventing::consumer::HEALTH_PART),
            Some(kit::health::PartState::Up)
        );
    }
    for (_, stop) in &members {
        stop.cancel();
    }
}

/// Writes an outbox row by hand, for a topic the contract does not have.
async fn enqueue_raw(runtime: &Runtime, topic: &str, envelope: &Envelope) {
    sqlx::query(
        "INSERT INTO outbox_message (topic, message_key, payload, headers, created_at) \
         VALUES ($1, $2, $3, '{}', 0)",
    )
    .bind(topic)
    .bind(envelope.key())
    .bind(envelope.to_json())
    .execute(&runtime.db)
    .await
    .expect("insert");
    runtime.outbox.wake();
}

async fn sent(runtime: &Runtime, envelope: &Envelope) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM outbox_message WHERE payload = $1 AND sent_at IS NOT NULL",
    )
    .bind(envelope.to_json())
    .fetch_one(&runtime.db)
    .await
    .expect("count")
        == 1
}

#[tokio::test]
async fn when_a_row_fails_no_later_row_of_its_key_is_marked_sent_and_other_keys_go_on() {
    let broker = Broker::start().await.expect("broker");
    let mut runtime = runtime("relay_blocked_key", &broker).await;
    runtime.settings.kafka.message_timeout = Duration::from_secs(1);
    runtime.settings.relay.lease = Duration::from_secs(7);
    // A new producer with the short timeout, so that the failing row fails fast.
    runtime.producer = eventing::kafka::SharedProducer::new(
        &runtime.settings.kafka,
        SERVICE,
        runtime.runtime_metrics.producer_replacements.clone(),
    )
    .expect("producer");
    let blocked = Uuid::now_v7();
    let failing = confirmed(blocked, 1);
    let behind = confirmed(blocked, 2);
    let other = confirmed(Uuid::now_v7(), 3);
    // The broker has no such topic and creates none, so this row fails every time.
    enqueue_raw(&runtime, "no.such.topic", &failing).await;
    enqueue_committed(&runtime, &[behind.clone(), other.clone()]).await;
    let stop = CancellationToken::new();
    tokio::spawn(runtime.relay("relay-a".into()).run(stop.clone()));
    eventually(
        "the other key published",
        Duration::from_secs(20),
        || async { sent(&runtime, &other).await.then_some(()) },
    )
    .await;
    eventually(
        "the failing row failed twice",
        Duration::from_secs(30),
        || async {
            (runtime.metrics.sample("outbox_relay_failures_total", &[]) >= 2.0).then_some(())
        },
    )
    .await;
    assert!(!sent(&runtime, &failing).await);
    assert!(
        !sent(&runtime, &behind).await,
        "a row behind a failed row of its key waits for it"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_relay_without_the_lease_publishes_nothing_until_it_is_given_up() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("relay_fenced", &broker).await;
    // Another relay holds the lease, and will for a minute.
    sqlx::query("UPDATE outbox_relay_lease SET holder = 'someone-else', expires_at = $1")
        .bind(kit::now_ms() + 60_000)
        .execute(&runtime.db)
        .await
        .expect("lease");
    let envelope = confirmed(Uuid::now_v7(), 1);
    enqueue_committed(&runtime, std::slice::from_ref(&envelope)).await;
    let stop = CancellationToken::new();
    tokio::spawn(runtime.relay("relay-a".into()).run(stop.clone()));
    // The relay says it is up just before its first round, in which it finds the lease taken.
    eventually("the relay running", Duration::from_secs(10), || async {
        runtime
            .health
            .state(eventing::outbox::HEALTH_PART)
            .map(drop)
    })
    .await;
    runtime.outbox.wake();
    // The holder stops cleanly and gives the lease up: this relay takes over at once, long
    // before the minute is out. Rather than watch for a while that nothing is published
    // before, the test reads when the message was handed to the broker.
    let given_up = kit::now_ms();
    sqlx::query("UPDATE outbox_relay_lease SET expires_at = 0")
        .execute(&runtime.db)
        .await
        .expect("lease");
    eventually(
        "published by the new holder",
        Duration::from_secs(10),
        || async { sent(&runtime, &envelope).await.then_some(()) },
    )
    .await;
    let handed_over = first_message(&broker, topics::ORDER_EVENTS)
        .await
        .timestamp_ms
        .expect("a timestamp");
    assert!(
        handed_over >= given_up,
        "it does not publish without the lease: handed over at {handed_over}, \
         the lease given up at {given_up}"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_dead_letter_filed_with_a_fatal_producer_replaces_it_and_goes_through() {
    let broker = Broker::start().await.expect("broker");
    // No relay runs here, as in the analytics forwarder: only dead letters are published.
    let (runtime, stop) =
        consuming_runtime("dlq_fatal", &broker, CountingHandler::failing_first(0)).await;
    make_fatal(&runtime.producer.get());
    let order = Uuid::now_v7();
    produce(&broker, &order.to_string(), b"not an envelope").await;
    let dlq = contract::topics::dlq_topic(SERVICE);
    let letters = read_topic(&broker.brokers, &dlq, Duration::from_secs(30), |r| {
        !r.is_empty()
    })
    .await
    .expect("read");
    assert_eq!(
        letters.len(),
        1,
        "the dead letter went through a new producer"
    );
    assert_eq!(
        runtime
            .metrics
            .sample("producer_replacements_total", &[("reason", "fatal")]),
        1.0
    );
    assert_eq!(runtime.producer.fatal(), None);
    stop.cancel();
}
