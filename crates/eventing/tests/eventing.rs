//! The outbox relay and the idempotent consumer, on their own, against a real Tansu broker and
//! a real Postgres database of each test's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use contract::{Envelope, OrderConfirmed, topics};
use eventing::db::{DatabaseSettings, Migrations, connect_and_migrate};
use eventing::{
    CommonSettings, Conn, HandleError, Handler, Inbound, Runtime, TraceContext, outbox,
};
use sqlx::migrate::Migrator;
use testkit::{Broker, eventually, fresh_database, produce_raw, read_topic};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const NO_MIGRATIONS: Migrations = Migrations {
    postgres: Migrator::DEFAULT,
    sqlite: Migrator::DEFAULT,
};

async fn runtime(label: &str, broker: &Broker) -> Runtime {
    let url = fresh_database(label).await.expect("database");
    let mut settings = CommonSettings::new(url, &broker.brokers);
    settings.relay.poll_interval_ms = 50;
    Runtime::connect("eventing-test", settings, &NO_MIGRATIONS)
        .await
        .expect("runtime")
}

fn confirmed(order_id: Uuid, n: i64) -> Envelope {
    Envelope::new(
        "eventing-test",
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
    let mut tx = eventing::db::begin(&runtime.db).await.expect("begin");
    for envelope in envelopes {
        outbox::enqueue(&mut tx, envelope, &TraceContext::new_root())
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    runtime.outbox.wake();
}

async fn unsent(runtime: &Runtime) -> i64 {
    outbox::backlog(&runtime.db).await.expect("backlog")
}

#[tokio::test]
async fn committed_outbox_rows_are_published_in_order_per_key_and_marked_sent() {
    let broker = Broker::start().await.expect("broker");
    let runtime = runtime("relay_order", &broker).await;
    let stop = CancellationToken::new();
    tokio::spawn(runtime.relay().run(stop.clone()));

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
    let mut tx = eventing::db::begin(&runtime.db).await.expect("begin");
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
    let restarted = Runtime::connect("eventing-test", runtime.settings.clone(), &NO_MIGRATIONS)
        .await
        .expect("runtime");
    let stop = CancellationToken::new();
    tokio::spawn(restarted.relay().run(stop.clone()));
    let read = read_topic(
        &broker.brokers,
        topics::ORDER_EVENTS,
        Duration::from_secs(20),
        |r| !r.is_empty(),
    )
    .await
    .expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].envelope.as_ref(), Some(&envelope));
    stop.cancel();
}

/// Counts each event it applies in a table, and fails the first `fail_first` attempts.
#[derive(Clone)]
struct CountingHandler {
    fail_first: u32,
    attempts: Arc<AtomicU32>,
}

impl Handler for CountingHandler {
    async fn handle(&self, conn: &mut Conn, event: &Inbound) -> Result<(), HandleError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            return Err(HandleError::Transient(anyhow::anyhow!(
                "the database hiccupped"
            )));
        }
        sqlx::query("INSERT INTO effect (event_id) VALUES ($1)")
            .bind(event.envelope.event_id.to_string())
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
    let runtime = runtime(label, broker).await;
    sqlx::query("CREATE TABLE effect (event_id TEXT NOT NULL)")
        .execute(&runtime.db)
        .await
        .expect("effect table");
    let consumer = runtime
        .consumer(&[topics::ORDER_EVENTS], handler)
        .expect("consumer");
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

async fn handled(runtime: &Runtime) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM processed_event")
        .fetch_one(&runtime.db)
        .await
        .expect("count")
}

#[tokio::test]
async fn the_same_event_delivered_twice_is_applied_once() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler {
        fail_first: 0,
        attempts: Arc::default(),
    };
    let (runtime, stop) = consuming_runtime("dedup", &broker, handler.clone()).await;
    let envelope = confirmed(Uuid::now_v7(), 7);
    let marker = confirmed(Uuid::now_v7(), 8);
    for e in [&envelope, &envelope, &marker] {
        produce_raw(
            &broker.brokers,
            topics::ORDER_EVENTS,
            &e.key(),
            e.to_json().as_bytes(),
            &[],
        )
        .await
        .expect("produce");
    }
    eventually(
        "both distinct events handled",
        Duration::from_secs(30),
        || async { (handled(&runtime).await == 2).then_some(()) },
    )
    .await;
    // Give the duplicate, wherever it is in its partition, time to be seen too.
    eventually("the duplicate counted", Duration::from_secs(10), || async {
        (runtime.metrics.get(
            "events_duplicate_total",
            &[
                ("consumer", "eventing-test"),
                ("event_type", "OrderConfirmed"),
            ],
        ) == 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(effects(&runtime).await, 2, "the duplicate changed nothing");
    stop.cancel();
}

#[tokio::test]
async fn an_unreadable_message_is_skipped_and_the_partition_moves_on() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler {
        fail_first: 0,
        attempts: Arc::default(),
    };
    let (runtime, stop) = consuming_runtime("poison", &broker, handler).await;
    let good = confirmed(Uuid::now_v7(), 1);
    let key = good.key();
    // Same key, so same partition: the good event sits behind the bad ones.
    for bad in [
        &b"\xff\x00 not json"[..],
        b"{\"event_type\":\"OrderConfirmed\"}",
        b"[]",
    ] {
        produce_raw(&broker.brokers, topics::ORDER_EVENTS, &key, bad, &[])
            .await
            .expect("produce");
    }
    let unknown = br#"{"event_id":"0193a0c4-0000-7000-8000-000000000001","event_type":"ParcelShipped","schema_version":1,"occurred_at":"2026-11-24T08:00:00Z","producer":"x","payload":{}}"#;
    produce_raw(&broker.brokers, topics::ORDER_EVENTS, &key, unknown, &[])
        .await
        .expect("produce");
    produce_raw(
        &broker.brokers,
        topics::ORDER_EVENTS,
        &key,
        good.to_json().as_bytes(),
        &[],
    )
    .await
    .expect("produce");
    eventually(
        "the good event handled",
        Duration::from_secs(30),
        || async { (effects(&runtime).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        runtime
            .metrics
            .get("events_rejected_total", &[("consumer", "eventing-test")]),
        3.0
    );
    assert_eq!(
        runtime
            .metrics
            .get("events_ignored_total", &[("consumer", "eventing-test")]),
        1.0
    );
    stop.cancel();
}

#[tokio::test]
async fn a_transient_failure_is_retried_until_the_event_is_applied() {
    let broker = Broker::start().await.expect("broker");
    let handler = CountingHandler {
        fail_first: 3,
        attempts: Arc::default(),
    };
    let (runtime, stop) = consuming_runtime("retry", &broker, handler.clone()).await;
    let envelope = confirmed(Uuid::now_v7(), 3);
    produce_raw(
        &broker.brokers,
        topics::ORDER_EVENTS,
        &envelope.key(),
        envelope.to_json().as_bytes(),
        &[],
    )
    .await
    .expect("produce");
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
        &NO_MIGRATIONS,
    )
    .await
    .expect_err("refused");
    assert!(error.to_string().contains("postgres://"), "{error}");
}
