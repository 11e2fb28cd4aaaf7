//! Kafka clients set up the one way every service uses them.
//!
//! - The producer is idempotent with `acks=all`: a retried send never duplicates or reorders
//!   messages within a partition, and a delivery report means every in-sync replica has it.
//! - Consumers commit automatically but store offsets by hand (`enable.auto.offset.store=false`):
//!   an offset is stored only after the transaction that handled its message committed, so
//!   the periodic commit never covers a message whose effect could still be lost.
//! - Topics are created explicitly with [`ensure_topics`]; nothing relies on a broker creating
//!   topics on first use.
//! - Every client of a service runs with a [`ClientState`] context: librdkafka's repeated
//!   complaints while a broker is down are logged once per interval with a count.
//! - The producer is a [`SharedProducer`], replaced by a new one after a fatal error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;

use kit::metrics::Counters;

use crate::metrics::{KafkaClient, KafkaRequestLabels, ReasonLabels};

mod context;
mod producer;

use context::STATISTICS_INTERVAL;
pub use context::{ClientState, Revocations};
pub use producer::{Delivered, Delivery, Producer, Record, Reporting};

/// The consumer every service consumes with.
pub type ServiceConsumer = StreamConsumer<ClientState>;

/// How to reach the broker and how consumers behave.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of brokers.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Consumer group id; defaults to the service's name.
    #[arg(long = "kafka-group-id", env = "KAFKA_GROUP_ID")]
    pub group_id: Option<String>,
    /// Longest a fetch waits for data (`fetch.wait.max.ms`), Kafka's own default. Both
    /// brokers answer a fetch as soon as data arrives (`saga-broker` by its patches 3 and 7),
    /// so this costs no latency; it only decides how often an idle consumer asks again.
    #[arg(
        long = "kafka-fetch-wait-max-ms",
        env = "KAFKA_FETCH_WAIT_MAX_MS",
        default_value = "500ms",
        value_parser = kit::duration::parse
    )]
    pub fetch_wait_max: Duration,
    /// After this long without a heartbeat the group gives a member's partitions to others.
    #[arg(
        long = "kafka-session-timeout-ms",
        env = "KAFKA_SESSION_TIMEOUT_MS",
        default_value = "10s",
        value_parser = kit::duration::parse
    )]
    pub session_timeout: Duration,
    /// How often a consumer tells the group it is alive.
    #[arg(
        long = "kafka-heartbeat-interval-ms",
        env = "KAFKA_HEARTBEAT_INTERVAL_MS",
        default_value = "1s",
        value_parser = kit::duration::parse
    )]
    pub heartbeat_interval: Duration,
    /// How often each consumer measures its lag (`consumer_lag` in `/metrics`).
    #[arg(
        long = "kafka-lag-interval-ms",
        env = "KAFKA_LAG_INTERVAL_MS",
        default_value = "10s",
        value_parser = kit::duration::parse
    )]
    pub lag_interval: Duration,
    /// Messages taken from the broker and queued for one partition's worker. A partition
    /// whose queue is full is paused until its worker makes room, and librdkafka then drops
    /// what it had fetched of it and fetches it again on resuming: a queue that holds a whole
    /// fetch keeps a backlog moving (with 256, a forwarder caught up 12,000 events in 10 s;
    /// with 4,096, in 3 s); a smaller one bounds what a worker that is behind holds.
    #[arg(
        long = "kafka-partition-queue",
        env = "KAFKA_PARTITION_QUEUE",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub partition_queue: u32,
    /// A consumer that has held no partition for this long, or has had messages waiting
    /// without taking any for this long, leaves its group and joins again.
    /// Default: twice the session timeout.
    #[arg(
        long = "kafka-watchdog-ms",
        env = "KAFKA_WATCHDOG_MS",
        value_parser = kit::duration::parse
    )]
    pub watchdog: Option<Duration>,
    /// How long a produced message may wait for the broker's acknowledgement before it fails
    /// and is tried again (`message.timeout.ms`). The relay's lease must be longer.
    #[arg(
        long = "kafka-message-timeout-ms",
        env = "KAFKA_MESSAGE_TIMEOUT_MS",
        default_value = "5s",
        value_parser = kit::duration::parse
    )]
    pub message_timeout: Duration,
    /// librdkafka's repeated errors (a broker down, say) are logged at most once per this
    /// interval, with how many there were.
    #[arg(
        long = "kafka-log-interval-ms",
        env = "KAFKA_LOG_INTERVAL_MS",
        default_value = "30s",
        value_parser = kit::duration::parse
    )]
    pub log_interval: Duration,
    #[command(flatten)]
    pub security: KafkaSecurity,
    /// Where the clients count the requests they send (`kafka_requests_total`), from
    /// librdkafka's statistics. Set by the runtime for a service's own clients; tools (shopctl,
    /// the tests' readers) count nothing.
    #[arg(skip)]
    pub request_counts: Option<Counters<KafkaRequestLabels>>,
}

/// How a client proves who it is to the brokers, and checks who they are. Locally, Tansu is
/// open on 127.0.0.1 (`plaintext`, the default); the compose stack's Kafka takes each service
/// as its own SCRAM-SHA-512 user (`sasl_plaintext` inside its network, or `sasl_ssl`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl` (librdkafka's `security.protocol`).
    #[arg(
        long = "kafka-security-protocol",
        env = "KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value_t = SecurityProtocol::Plaintext
    )]
    pub protocol: SecurityProtocol,
    /// The SASL mechanism, with `sasl_*`: `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "KAFKA_SASL_MECHANISM",
        default_value = "SCRAM-SHA-512"
    )]
    pub sasl_mechanism: String,
    /// The SASL user, with `sasl_*`.
    #[arg(long = "kafka-sasl-username", env = "KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// The SASL password, with `sasl_*`.
    #[arg(
        long = "kafka-sasl-password",
        env = "KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,
    /// A PEM file of the certificate authorities that sign the brokers' certificates, with
    /// `ssl` and `sasl_ssl` (the system's store otherwise).
    #[arg(long = "kafka-ssl-ca-file", env = "KAFKA_SSL_CA_FILE")]
    pub ssl_ca_file: Option<std::path::PathBuf>,
}

/// librdkafka's `security.protocol`, spelt as librdkafka spells it (`sasl_plaintext`); the
/// hyphenated spelling is taken too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    #[value(name = "sasl_plaintext", alias = "sasl-plaintext")]
    SaslPlaintext,
    #[value(name = "sasl_ssl", alias = "sasl-ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    fn wire(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl KafkaSecurity {
    /// Refuses settings that cannot work: SASL without a user and password.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.protocol.sasl() && (self.sasl_username.is_none() || self.sasl_password.is_none()) {
            anyhow::bail!(
                "KAFKA_SECURITY_PROTOCOL={} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
                self.protocol.wire()
            );
        }
        Ok(())
    }

    /// Adds these settings to a client's configuration.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.wire());
        if self.protocol.sasl() {
            config.set("sasl.mechanisms", &self.sasl_mechanism);
            if let Some(user) = &self.sasl_username {
                config.set("sasl.username", user);
            }
            if let Some(password) = &self.sasl_password {
                config.set("sasl.password", password);
            }
        }
        if let Some(ca) = &self.ssl_ca_file {
            config.set("ssl.ca.location", ca.display().to_string());
        }
    }
}

impl KafkaSettings {
    /// Settings for a broker list with every other value at its default.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            ..kit::defaults::defaults()
        }
    }

    /// The watchdog's bound: [`KafkaSettings::watchdog`] if set, or twice the session timeout.
    pub fn watchdog_bound(&self) -> Duration {
        self.watchdog.unwrap_or(2 * self.session_timeout)
    }

    /// The longest one relay round may take: a message not acknowledged within the message
    /// timeout fails, and 5 s more cover the database work around it. The relay's lease must
    /// be longer, and is renewed while at least this much of it is left.
    pub fn publish_round_bound(&self) -> Duration {
        self.message_timeout + Duration::from_secs(5)
    }

    /// The context of a new client called `name`.
    fn context(&self, name: &str) -> ClientState {
        ClientState::new(name, self.log_interval)
    }

    /// The context of a service's own `client`, counting its requests when the settings say
    /// where: librdkafka then reports its statistics every [`STATISTICS_INTERVAL`].
    fn counted(&self, config: &mut ClientConfig, name: &str, client: KafkaClient) -> ClientState {
        let state = self.context(name);
        match &self.request_counts {
            Some(counts) => {
                config.set("statistics.interval.ms", millis(STATISTICS_INTERVAL));
                state.counting(counts.clone(), client)
            }
            None => state,
        }
    }

    /// What every client of these settings starts from: the brokers and how to reach them.
    /// Readers of their own (the console, `shopctl`) build on it.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            // The broker address may be a name that resolves to several addresses in
            // containers; try them all.
            .set("client.dns.lookup", "use_all_dns_ips");
        self.security.apply(&mut config);
        config
    }

    /// An idempotent producer with `acks=all`.
    pub fn producer(&self, client_id: &str) -> Result<Producer, KafkaError> {
        let mut config = self.client_config();
        config
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Send as soon as possible: the relay already batches what it has.
            .set("linger.ms", "1")
            // A message that cannot be delivered within this time fails and the relay tries
            // it again, rather than hanging on the broker forever.
            .set("message.timeout.ms", millis(self.message_timeout));
        let context = self.counted(&mut config, client_id, KafkaClient::Producer);
        Producer::create(&config, context)
    }

    /// A consumer in `group` subscribed to `topics`, reading from the earliest offset when
    /// the group has none, with automatic commits of offsets stored by hand.
    pub fn consumer(&self, group: &str, topics: &[&str]) -> Result<ServiceConsumer, KafkaError> {
        let group = self.group_id.as_deref().unwrap_or(group);
        let mut config = self.client_config();
        let context = self.counted(&mut config, group, KafkaClient::Consumer);
        let consumer: ServiceConsumer = config
            .set("group.id", group)
            .set("client.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", millis(self.fetch_wait_max))
            .set("session.timeout.ms", millis(self.session_timeout))
            .set("heartbeat.interval.ms", millis(self.heartbeat_interval))
            .create_with_context(context)?;
        consumer.subscribe(topics)?;
        Ok(consumer)
    }

    /// An admin client, for creating topics.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
        self.client_config().create()
    }
}

/// The producer of a service, replaced by a new one when it hits a fatal error or is cut off
/// from a broker that others reach.
///
/// An idempotent producer that hits a fatal error (the broker fenced its producer id, say)
/// fails every message from then on. Everything that publishes asks for [`SharedProducer::get`]
/// each time, so once [`SharedProducer::replace_if_fatal`] has put a new producer in place,
/// publishing goes on with it; messages that failed with the old one are still unsent in the
/// outbox and are published again, which consumers deduplicate. Every replacement is logged
/// and counted in `producer_replacements_total{reason}`, whoever asked for it (the relay, or
/// a service filing a dead letter).
#[derive(Clone)]
pub struct SharedProducer {
    current: Arc<Mutex<Producer>>,
    settings: KafkaSettings,
    name: String,
    replacements: Counters<ReasonLabels>,
}

impl SharedProducer {
    /// Creates the first producer; replacements are counted in `replacements`
    /// (`producer_replacements_total`), every reason at zero from now.
    pub fn new(
        settings: &KafkaSettings,
        name: &str,
        replacements: Counters<ReasonLabels>,
    ) -> Result<Self, KafkaError> {
        for reason in [REPLACED_FATAL, REPLACED_CUT_OFF, REPLACED_STALE] {
            drop(replacements.get_or_create(&ReasonLabels { reason }));
        }
        Ok(SharedProducer {
            current: Arc::new(Mutex::new(settings.producer(name)?)),
            settings: settings.clone(),
            name: name.to_owned(),
            replacements,
        })
    }

    /// The producer in use now.
    pub fn get(&self) -> Producer {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The fatal error of the producer in use, if it hit one.
    pub fn fatal(&self) -> Option<String> {
        fatal_error(&self.get())
    }

    /// Replaces the producer when it hit a fatal error; returns the error it had.
    pub fn replace_if_fatal(&self) -> Result<Option<String>, KafkaError> {
        let Some(fatal) = self.fatal() else {
            return Ok(None);
        };
        self.replace(REPLACED_FATAL, &fatal)?;
        Ok(Some(fatal))
    }

    /// Replaces the producer when it cannot fetch the broker's metadata although the broker
    /// accepts connections: a client that lost its way (seen after a broker restart) and
    /// that a new client does not share. `true` if it did. Blocking: it asks the broker.
    pub fn replace_if_cut_off(&self) -> Result<bool, KafkaError> {
        let answers = self
            .get()
            .client()
            .fetch_metadata(None, Duration::from_secs(2))
            .is_ok();
        if answers || !broker_reachable(&self.settings.brokers, Duration::from_secs(1)) {
            return Ok(false);
        }
        self.replace(
            REPLACED_CUT_OFF,
            "it cannot reach the broker, which accepts connections",
        )?;
        Ok(true)
    }

    /// Replaces the producer when `error` says the broker no longer knows its producer id or
    /// epoch (a broker that lost its producer state, as Tansu does when it restarts, answers
    /// every batch of the old producer so, for ever): a new producer gets a new id. `true` if
    /// it did.
    pub fn replace_if_stale(&self, error: &KafkaError) -> Result<bool, KafkaError> {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let stale = matches!(
            error.rdkafka_error_code(),
            Some(
                Code::InvalidProducerEpoch
                    | Code::UnknownProducerId
                    | Code::InvalidProducerIdMapping
                    | Code::ProducerFenced
                    | Code::OutOfOrderSequenceNumber
            )
        );
        if !stale {
            return Ok(false);
        }
        self.replace(REPLACED_STALE, &error.to_string())?;
        Ok(true)
    }

    /// Puts a new producer in place, and says so. The old one is dropped on a thread of its
    /// own, since dropping a client blocks until its threads end.
    fn replace(&self, reason: &'static str, why: &str) -> Result<(), KafkaError> {
        let new = self.settings.producer(&self.name).inspect_err(|error| {
            tracing::error!(%error, "could not create a new producer");
        })?;
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(|e| e.into_inner()),
            new,
        );
        let _ = std::thread::Builder::new()
            .name("drop-producer".into())
            .spawn(move || drop(old));
        tracing::warn!(reason, why, "replaced the producer");
        self.replacements
            .get_or_create(&ReasonLabels { reason })
            .inc();
        Ok(())
    }
}

/// The `reason` of a producer replaced after a fatal error.
const REPLACED_FATAL: &str = "fatal";
/// The `reason` of a producer replaced because it could not reach a reachable broker.
const REPLACED_CUT_OFF: &str = "cut_off";
/// The `reason` of a producer replaced because the broker no longer knows its id or epoch.
const REPLACED_STALE: &str = "stale";

/// A duration as the whole milliseconds a librdkafka setting takes.
fn millis(duration: Duration) -> String {
    kit::duration::as_millis_u32(duration).to_string()
}

/// Whether the broker (or librdkafka before it) refuses a message for good, whatever the
/// number of tries: too large, or invalid.
pub fn never_publishable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::InvalidArgument
        )
    )
}

/// The fatal error a producer hit, as librdkafka tells it.
fn fatal_error(producer: &Producer) -> Option<String> {
    producer
        .client()
        .fatal_error()
        .map(|(code, reason)| format!("{reason} ({code:?})"))
}

/// Whether something accepts TCP connections at one of `brokers` (a comma-separated
/// `host:port` list) within `timeout`: a cheap probe that tells "the broker is down" from
/// "the broker is up but this client cannot talk to it". Blocking.
pub fn broker_reachable(brokers: &str, timeout: Duration) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    brokers.split(',').any(|broker| {
        broker
            .trim()
            .to_socket_addrs()
            .map(|addrs| {
                addrs
                    .into_iter()
                    .any(|a| TcpStream::connect_timeout(&a, timeout).is_ok())
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scram(protocol: SecurityProtocol) -> KafkaSettings {
        let mut settings = KafkaSettings::new("127.0.0.1:1");
        settings.security = KafkaSecurity {
            protocol,
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: Some("order-service".into()),
            sasl_password: Some("secret".into()),
            ssl_ca_file: None,
        };
        settings
    }

    #[test]
    fn this_build_of_librdkafka_speaks_scram_and_tls() {
        // librdkafka refuses, when a client is created, a mechanism or protocol it was built
        // without ("No provider for SASL mechanism", "not built with SSL support").
        for protocol in [
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
            SecurityProtocol::Ssl,
        ] {
            let settings = scram(protocol);
            settings.security.check().expect("complete settings");
            let created: Result<rdkafka::producer::BaseProducer, _> =
                settings.client_config().create();
            assert!(created.is_ok(), "{protocol:?}: {:?}", created.err());
        }
    }

    #[test]
    fn a_producer_the_broker_forgot_is_replaced_and_one_merely_failing_is_not() {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let (metrics, runtime) = crate::metrics::registry();
        let replacements = runtime.producer_replacements.clone();
        let producer =
            SharedProducer::new(&KafkaSettings::new("127.0.0.1:1"), "test", replacements)
                .expect("a producer");
        let timed_out = KafkaError::MessageProduction(Code::MessageTimedOut);
        assert!(!producer.replace_if_stale(&timed_out).expect("no error"));
        let forgotten = KafkaError::MessageProduction(Code::InvalidProducerEpoch);
        assert!(producer.replace_if_stale(&forgotten).expect("replaced"));
        assert_eq!(
            metrics.sample("producer_replacements_total", &[("reason", "stale")]),
            1.0
        );
    }

    #[test]
    fn the_security_protocol_is_spelt_as_librdkafka_spells_it() {
        use clap::ValueEnum;
        for (spelt, protocol) in [
            ("plaintext", SecurityProtocol::Plaintext),
            ("sasl_plaintext", SecurityProtocol::SaslPlaintext),
            ("sasl-plaintext", SecurityProtocol::SaslPlaintext),
            ("sasl_ssl", SecurityProtocol::SaslSsl),
        ] {
            assert_eq!(SecurityProtocol::from_str(spelt, false), Ok(protocol));
        }
        assert_eq!(SecurityProtocol::SaslSsl.wire(), "sasl_ssl");
    }

    #[test]
    fn sasl_without_a_user_and_password_is_refused_at_start() {
        let mut settings = scram(SecurityProtocol::SaslPlaintext);
        settings.security.sasl_password = None;
        let refused = settings.security.check().expect_err("refused");
        assert!(
            refused.to_string().contains("KAFKA_SASL_PASSWORD"),
            "{refused}"
        );
        assert!(
            KafkaSettings::new("x").security.check().is_ok(),
            "plaintext needs nothing"
        );
    }

    #[test]
    fn the_watchdog_defaults_to_twice_the_session_timeout() {
        let mut settings = KafkaSettings::new("b:9092");
        assert_eq!(settings.watchdog_bound(), Duration::from_secs(20));
        settings.watchdog = Some(Duration::from_secs(5));
        assert_eq!(settings.watchdog_bound(), Duration::from_secs(5));
    }
}
