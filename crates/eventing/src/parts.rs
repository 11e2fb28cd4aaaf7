//! What the runtime's workers (the consumer and the relay) share with each other and with the
//! service's handlers, built once by [`crate::runtime::Runtime::connect`].

use std::sync::Arc;

use kit::Db;
use kit::health::Health;

use crate::kafka::{KafkaSettings, SharedProducer};
use crate::metrics::RuntimeMetrics;

/// The parts of one running service that its workers use.
#[derive(Clone)]
pub struct Parts {
    /// The service's name: its consumer group, its `producer` in envelopes, its log field.
    pub name: &'static str,
    /// The background workers' pool.
    pub db: Db,
    pub producer: SharedProducer,
    /// Wakes the relay after a commit that enqueued events ([`crate::outbox::Outbox`]).
    pub outbox: kit::wake::Wake,
    /// The runtime's families in the service's registry.
    pub metrics: Arc<RuntimeMetrics>,
    /// What each part of the service says about itself, for `/health/ready`.
    pub health: Health,
    pub kafka: KafkaSettings,
}
