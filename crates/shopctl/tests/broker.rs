//! The local broker's storage (broker/PATCHES.md): a fetch must not get slower as the topics
//! grow. What made it slower was the plan SQLite chose: every header lookup scanned the whole
//! `header` table, and every fetch read the whole backlog. So this checks the plans SQLite
//! chooses for Tansu's own fetch statements, on the database a running broker created, and
//! that the fetch reads a bounded number of records: a plan, unlike a timing, does not depend
//! on how busy the machine is. BENCHMARKS.md has the timings. A fetch also brings each
//! record's headers with its records in the same query (saga patch 14), so the last test
//! checks that every record gets back exactly the headers it was sent with.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::{Connection, Row};

mod local;

/// The statement the broker's fetch runs, from the vendored sources it is built from.
const RECORD_HEADER_FETCH: &str =
    include_str!("../../../broker/vendor/tansu-storage/src/sql/record_header_fetch.sql");

/// SQLite's plan for `sql`, one step per line, with every parameter NULL.
async fn plan(conn: &mut sqlx::SqliteConnection, sql: &str, parameters: usize) -> Vec<String> {
    let statement: String = sql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!(
        "EXPLAIN QUERY PLAN {}",
        statement.trim().trim_end_matches(';')
    );
    let mut query = sqlx::query(&text);
    for _ in 0..parameters {
        query = query.bind(Option::<i64>::None);
    }
    query
        .fetch_all(&mut *conn)
        .await
        .expect("a plan")
        .iter()
        .map(|row| row.get::<String, _>("detail"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_searches_indexes_and_reads_a_bounded_number_of_records() {
    let stack = local::start_stack("broker-plan").await;
    let db = stack.data_dir().join("tansu/tansu.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .expect("the broker's database");

    let steps = plan(&mut conn, RECORD_HEADER_FETCH, 6).await;
    assert!(
        steps
            .iter()
            .any(|step| step.starts_with("SEARCH h USING INDEX header_topition_offset")),
        "a record's headers are found through the index: {steps:#?}"
    );
    assert!(
        !steps
            .iter()
            .any(|step| ["SCAN h", "SCAN r", "SCAN header", "SCAN record"]
                .iter()
                .any(|scan| step == scan || step.starts_with(&format!("{scan} ")))),
        "no fetch scans a whole table of records or headers: {steps:#?}"
    );
    assert!(
        steps
            .iter()
            .any(|step| step.starts_with("SEARCH r USING") && step.contains("offset_id>")),
        "records are read from the fetch offset on, through the primary key: {steps:#?}"
    );
    let candidates = RECORD_HEADER_FETCH
        .to_lowercase()
        .split("with candidates as")
        .nth(1)
        .and_then(|rest| rest.split("),").next().map(str::to_owned))
        .expect("the candidates of a fetch");
    assert!(
        candidates.contains("order by r.offset_id") && candidates.contains("limit 2048"),
        "a fetch reads at most 2,048 records, whatever the backlog"
    );
}

/// A broker of the test's own, killed when dropped (and with the test's thread, should the
/// test process die first).
struct OwnBroker(Child);

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Tansu on SQLite storage alone, its database in `folder`, listening on `port`. It runs its
/// maintenance (retention and compaction) as it starts.
fn start_sqlite_broker(folder: &std::path::Path, port: u16) -> OwnBroker {
    std::fs::create_dir_all(folder).expect("the broker's folder");
    let listener = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(local_broker::binary().expect("saga-broker is installed"));
    testkit::die_with_thread(&mut command);
    let child = command
        .current_dir(folder)
        .args(["broker", "--listener-url", &listener])
        .args(["--advertised-listener-url", &listener])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("saga-broker starts");
    OwnBroker(child)
}

/// A folder of the test's own under the system's temporary folder, removed with what is in
/// it when dropped. Declare it before the broker that keeps its database there, so that the
/// broker is stopped first.
struct Folder(std::path::PathBuf);

impl std::ops::Deref for Folder {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fresh_folder(label: &str) -> Folder {
    Folder(local::fresh_folder(&format!("broker-{label}")))
}

/// Creates a topic of one partition, asking until the broker listens.
async fn create_topic(brokers: &str, topic: &str, compacted: bool) {
    let settings = eventing::kafka::KafkaSettings::new(brokers);
    testkit::eventually(
        "the broker creating a topic",
        Duration::from_secs(30),
        || async {
            ops::topics::ensure_topics(&settings, &[(topic.to_owned(), 1, compacted)])
                .await
                .ok()
        },
    )
    .await;
}

fn producer(brokers: &str, idempotent: bool) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", idempotent.to_string())
        .create()
        .expect("a producer")
}

/// Sends one record and waits until the broker has stored it.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &str,
    headers: &[(&str, Option<&str>)],
) {
    testkit::send_with(producer, topic, key, value.as_bytes(), headers)
        .await
        .expect("the broker takes the record");
}

/// A record as read back: its offset, value and headers.
type Read = (i64, String, Vec<(String, Option<String>)>);

fn read_back(message: &rdkafka::message::BorrowedMessage<'_>) -> Read {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    (
                        header.key.to_owned(),
                        header
                            .value
                            .map(|value| String::from_utf8_lossy(value).into_owned()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
    (message.offset(), value, headers)
}

/// Reads the topic's only partition from `offset` until `count` records have come, or 30 s.
async fn read_from(brokers: &str, topic: &str, offset: i64, count: usize) -> Vec<Read> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, Offset::Offset(offset))
        .expect("an offset");
    consumer.assign(&partitions).expect("an assignment");
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while read.len() < count && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            read.push(read_back(&message));
        }
    }
    read
}

/// What a record is sent with: its value and its headers in order, a header's value `None`
/// when it has none.
type Sent = (&'static str, Vec<(&'static str, Option<&'static str>)>);

#[tokio::test(flavor = "multi_thread")]
async fn each_record_is_read_back_with_exactly_the_headers_it_was_sent_with() {
    let port = testkit::free_port();
    let folder = fresh_folder("headers");
    let _broker = start_sqlite_broker(&folder, port);
    let brokers = format!("127.0.0.1:{port}");
    create_topic(&brokers, "headers", false).await;

    // Records without headers between records with several, a header key twice, a header
    // without a value and one with an empty value; every second record from an idempotent
    // producer, so that the fetch splits them into batches by producer as it reads them.
    let sent: Vec<Sent> = vec![
        ("no headers", vec![]),
        ("one header", vec![("a", Some("1"))]),
        (
            "a key twice and a header without a value",
            vec![("dup", Some("first")), ("b", None), ("dup", Some("second"))],
        ),
        ("an empty value", vec![("c", Some(""))]),
        ("no headers again", vec![]),
        ("last", vec![("z", Some("26")), ("y", Some("25"))]),
    ];
    let plain = producer(&brokers, false);
    let idempotent = producer(&brokers, true);
    for (n, (value, headers)) in sent.iter().enumerate() {
        let from = if n % 2 == 0 { &plain } else { &idempotent };
        send(from, "headers", "one key", value, headers).await;
    }

    let read = read_from(&brokers, "headers", 0, sent.len()).await;

    let expected: Vec<Read> = sent
        .iter()
        .enumerate()
        .map(|(offset, (value, headers))| {
            (
                offset as i64,
                (*value).to_owned(),
                headers
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), value.map(str::to_owned)))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(read, expected);
}

/// A compacted topic has gaps where older records of a key were removed. A fetch from an
/// offset in such a gap (where a consumer that read up to it resumes) used to give its first
/// record the headers stored at the fetch's offset, which are gone with the removed record:
/// the catalog's events would come without the headers that say where they come from.
#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_from_a_gap_left_by_compaction_brings_each_record_s_own_headers() {
    let folder = fresh_folder("compacted");
    let port = testkit::free_port();
    let broker = start_sqlite_broker(&folder, port);
    let brokers = format!("127.0.0.1:{port}");
    create_topic(&brokers, "catalog", true).await;
    let plain = producer(&brokers, false);
    for (key, value) in [("mug", "mug v1"), ("lamp", "lamp v1"), ("lamp", "lamp v2")] {
        send(&plain, "catalog", key, value, &[("from", Some(value))]).await;
    }
    drop(plain);

    // The broker compacts as it starts: lamp v1, at offset 1, goes.
    drop(broker);
    let _broker = start_sqlite_broker(&folder, port);
    create_topic(&brokers, "catalog", true).await;
    let read = testkit::eventually(
        "the restarted broker compacting the topic",
        Duration::from_secs(60),
        || async {
            let read = read_from(&brokers, "catalog", 0, 2).await;
            (read
                .iter()
                .map(|(offset, _, _)| *offset)
                .collect::<Vec<_>>()
                == [0, 2])
            .then_some(read)
        },
    )
    .await;
    assert_eq!(read[0].1, "mug v1", "{read:?}");

    let resumed = read_from(&brokers, "catalog", 1, 1).await;
    assert_eq!(
        resumed,
        vec![(
            2,
            "lamp v2".to_owned(),
            vec![("from".to_owned(), Some("lamp v2".to_owned()))]
        )]
    );
}
