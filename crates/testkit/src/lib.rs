//! Test helpers that give each test real things of its own: a broker on a free port with the
//! contract's topics, and fresh Postgres databases. Nothing here fakes a broker or a database.
//!
//! - `TEST_BROKER` picks the broker: `tansu` (the default), `saga-broker` with in-memory
//!   storage, which must be on `PATH` (`scripts/install-broker.sh` puts it there); or `kafka`,
//!   Apache Kafka of the version compose deploys, one KRaft node per test
//!   (`scripts/install-kafka.sh` installs it; [`kafka`]).
//! - `TEST_BACKEND` picks the database of every service: `postgres` (the default) or
//!   `sqlite`. Postgres is reached through `TEST_DATABASE_URL` (default
//!   `postgres://shop:shop@127.0.0.1:55432/postgres`), a role allowed to create databases;
//!   `scripts/test.sh` starts a server of its own and sets it; `scripts/start-postgres.sh`
//!   sets up the default one. SQLite files go to a fresh temporary folder.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use contract::{Decoded, Envelope};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

pub mod kafka;

/// The Postgres server tests create their databases on.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://shop:shop@127.0.0.1:55432/postgres".to_owned())
}

/// Whether tests run on SQLite (`TEST_BACKEND=sqlite`) rather than Postgres.
pub fn sqlite_backend() -> bool {
    std::env::var("TEST_BACKEND").is_ok_and(|b| b == "sqlite")
}

/// Creates an empty database named after `label`, on the backend `TEST_BACKEND` names, and
/// returns its URL.
pub async fn fresh_database(label: &str) -> anyhow::Result<String> {
    let name = format!(
        "t_{}_{}",
        label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        uuid::Uuid::new_v4().simple()
    );
    if sqlite_backend() {
        let path = std::env::temp_dir()
            .join("saga-tests")
            .join(format!("{name}.db"));
        return Ok(format!("sqlite://{}", path.display()));
    }
    sqlx::any::install_default_drivers();
    let admin = admin_database_url();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .with_context(|| {
            format!("connecting to Postgres at {admin}; is it running? (scripts/test.sh starts one of its own)")
        })?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .context("creating a test database")?;
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .context("TEST_DATABASE_URL has no database name")?;
    Ok(format!("{base}/{name}"))
}

/// Ports this process has handed out: a port free when asked is not bound at once, so two
/// tests running side by side could otherwise be handed the same one (a stack of processes
/// takes a whole run of them).
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Takes `count` ports from `base` if none was handed out before and all are free now.
fn take(base: u16, count: u16) -> bool {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let ports: Option<Vec<u16>> = (0..count).map(|offset| base.checked_add(offset)).collect();
    let Some(ports) = ports else {
        return false;
    };
    let free = ports
        .iter()
        .all(|port| !handed_out.contains(port) && TcpListener::bind(("127.0.0.1", *port)).is_ok());
    if free {
        handed_out.extend(ports);
    }
    free
}

/// Where runs of ports for the tests are taken from: below the kernel's ephemeral range, so
/// that no outgoing connection (a service's to the broker, say) can take a port as its source
/// between the moment it is handed out and the moment its server binds it. That race once made
/// a stack's service fail to bind ("Address already in use").
fn port_range() -> std::ops::Range<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    10_000..ephemeral_low.max(12_000)
}

/// A candidate first port of a run of `count`, at random in [`port_range`].
fn candidate(count: u16) -> u16 {
    let range = port_range();
    let span = range
        .end
        .saturating_sub(range.start)
        .saturating_sub(count)
        .max(1);
    let random = (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u16;
    range.start + random
}

/// A free TCP port on 127.0.0.1 (free when asked, and never handed out twice by this
/// process; bind it soon).
pub fn free_port() -> u16 {
    free_port_run(1)
}

/// The first of `count` consecutive free ports on 127.0.0.1 (free when asked, none handed out
/// before by this process, none in the kernel's ephemeral range; bind them soon).
pub fn free_port_run(count: u16) -> u16 {
    loop {
        let base = candidate(count);
        if take(base, count) {
            return base;
        }
    }
}

/// Which broker the tests run against (`TEST_BROKER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// `saga-broker` (Tansu 0.6.0, patched), in-memory storage: `TEST_BROKER=tansu` or unset.
    Tansu,
    /// Apache Kafka, one KRaft node: `TEST_BROKER=kafka`.
    Kafka,
}

impl BrokerKind {
    /// The broker `TEST_BROKER` names; any other value fails the test with what is allowed.
    pub fn from_env() -> BrokerKind {
        match std::env::var("TEST_BROKER").as_deref() {
            Err(_) | Ok("" | "tansu") => BrokerKind::Tansu,
            Ok("kafka") => BrokerKind::Kafka,
            Ok(other) => panic!("TEST_BROKER={other:?}: expected `tansu` or `kafka`"),
        }
    }
}

/// A broker of the test's own, of the kind `TEST_BROKER` names.
///
/// It is killed when the thread that started it exits, which for a test is after the test's
/// runtime has shut down: services and consumers still running when a test ends (or panics)
/// close against a live broker instead of hanging on a dead one. [`Broker::stop`] kills it
/// earlier, to test what happens when the broker goes away.
#[derive(Debug)]
pub struct Broker {
    /// `127.0.0.1:<port>`.
    pub brokers: String,
    child: Child,
}

impl Broker {
    /// Starts the broker `TEST_BROKER` names on a free port and creates every topic of the
    /// contract, dead-letter topics included.
    pub async fn start() -> anyhow::Result<Broker> {
        match BrokerKind::from_env() {
            BrokerKind::Tansu => Broker::start_tansu().await,
            BrokerKind::Kafka => Broker::start_kafka().await,
        }
    }

    /// Starts Tansu with in-memory storage.
    async fn start_tansu() -> anyhow::Result<Broker> {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let binary = local_broker::binary()?;
        let mut command = Command::new(binary);
        die_with_thread(&mut command);
        let child = command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `saga-broker`")?;
        let broker = Broker {
            brokers: format!("127.0.0.1:{port}"),
            child,
        };
        wait_for_port(port, Duration::from_secs(20))?;
        create_topics(&broker.brokers).await?;
        Ok(broker)
    }

    /// Starts a fresh Apache Kafka node; its log is `kafka.log` in its folder under
    /// `$TMPDIR/saga-tests/kafka/<test process id>/`.
    async fn start_kafka() -> anyhow::Result<Broker> {
        let port = free_port_run(2);
        let (child, log) = kafka::spawn(port)?;
        let broker = Broker {
            brokers: format!("127.0.0.1:{port}"),
            child,
        };
        wait_for_port(port, kafka::START_WITHIN)
            .with_context(|| format!("Apache Kafka did not listen; its log: {}", log.display()))?;
        // The node listens before its broker has registered with its controller, and until
        // then refuses to create topics (no broker to place them on): ask again until it can.
        kit::poll::until(
            "Apache Kafka creating the contract's topics",
            kafka::START_WITHIN,
            Duration::from_millis(200),
            || async { create_topics(&broker.brokers).await.ok() },
        )
        .await
        .with_context(|| format!("its log: {}", log.display()))?;
        Ok(broker)
    }
}

impl Broker {
    /// Kills the broker now.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the child receive SIGKILL when the thread that spawned it exits, so that no broker
/// (or other process a test starts) outlives its test, even when the test process is killed.
#[allow(unsafe_code)]
pub fn die_with_thread(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe and touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn wait_for_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    kit::poll::until_blocking(
        &format!("something listening on port {port}"),
        within,
        Duration::from_millis(50),
        || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok(),
    )?;
    Ok(())
}

async fn create_topics(brokers: &str) -> anyhow::Result<()> {
    let settings = eventing::kafka::KafkaSettings::new(brokers);
    ops::topics::ensure_topics(&settings, &ops::topics::contract_topics())
        .await
        .context("creating the contract's topics")
}

/// Polls `probe` every 50 ms until it returns `Some`, or fails the test after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match kit::poll::until(what, within, Duration::from_millis(50), probe).await {
        Ok(value) => value,
        Err(timed_out) => panic!("timed out: {timed_out}"),
    }
}

/// Publishes raw bytes to a topic, as a misbehaving or duplicating producer would.
pub async fn produce_raw(
    brokers: &str,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let headers: Vec<(&str, Option<&str>)> = headers
        .iter()
        .map(|(name, value)| (*name, Some(*value)))
        .collect();
    send_with(&producer, topic, key, payload, &headers).await?;
    Ok(())
}

/// Sends one record with `producer` and waits until the broker has stored it. A header's
/// value is `None` when it has none.
pub async fn send_with(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, Option<&str>)],
) -> rdkafka::error::KafkaResult<()> {
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: *value,
        });
    }
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(owned),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
    /// The message's timestamp in milliseconds: when its producer handed it over, unless the
    /// topic says the broker's append time.
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, String)>,
    pub envelope: Option<Envelope>,
}

impl Received {
    /// The value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a topic from the beginning with a throwaway group until `done` says the messages
/// read so far are enough, or `within` passes; returns what was read.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    within: Duration,
    done: impl Fn(&[Received]) -> bool,
) -> anyhow::Result<Vec<Received>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + within;
    let mut read = Vec::new();
    while !done(&read) && Instant::now() < deadline {
        let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
        else {
            continue;
        };
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let envelope = match Envelope::decode(message.payload().unwrap_or_default()) {
            Ok(Decoded::Known(envelope)) => Some(envelope),
            _ => None,
        };
        read.push(Received {
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            headers,
            envelope,
        });
    }
    Ok(read)
}

/// The admin token the tests' services take (`ADMIN_TOKEN`): operator endpoints need it.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// An HTTP client that sends [`ADMIN_TOKEN`] with every request, as an operator's tools do.
pub fn operator_client() -> reqwest::Client {
    operator_client_with(ADMIN_TOKEN)
}

/// An HTTP client that sends `token` as the admin token with every request: for a stack with
/// a token of its own (`shopctl::stack::Stack::admin_token`).
pub fn operator_client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

/// The data-platform mock's settings for a test: a free port, the tests' admin token.
pub fn mock_config() -> data_platform_mock::Config {
    let mut config = data_platform_mock::Config::local();
    config.http.admin_token = Some(ADMIN_TOKEN.to_owned());
    config
}
