//! The event runtime every service of the saga shares: Kafka and the database together. It
//! builds on the service kit (`kit`), which has no Kafka in it.
//!
//! - [`kafka`]: the idempotent producer, consumer settings, and the client's security.
//! - [`outbox`]: the transactional outbox ([`outbox::enqueue`]) and its [`outbox::Relay`].
//! - [`consumer`]: the idempotent consumer that runs a service's [`consumer::Handler`].
//! - [`dlq`]: dead-letter topics for messages that can never be processed.
//! - [`housekeeping`]: retention of published outbox rows and processed-event records.
//! - [`parts`]: what the consumer and the relay share.
//! - [`metrics`]: the runtime's metric families.
//! - [`runtime`]: [`Runtime`], how a service connects, and [`Runtime::app`], how it is
//!   assembled with every worker and readiness check the runtime gives it.
//!
//! The delivery guarantees of the whole system rest on two rules this crate enforces: an
//! event is published only after the transaction that caused it committed, and an offset is
//! stored only after the transaction that handled its message committed.

pub mod consumer;
pub mod dlq;
pub mod housekeeping;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod parts;
pub mod runtime;

pub use consumer::{HandleError, Handler, Inbound};
pub use outbox::Outbox;
pub use runtime::{Assemble, CommonSettings, Publishes, Runtime};
