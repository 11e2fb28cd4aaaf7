//! The event contract every service shares, and the only code they share by type.
//!
//! - [`topics`]: topic names, their keys and partition counts, and the Kafka header names.
//! - [`events`]: one struct per event payload of SPEC.md, and the [`Event`] enum over them.
//! - [`envelope`]: the envelope every event travels in, with encoding and decoding that never
//!   panics, whatever bytes arrive.
//! - [`order_request`]: the rules of an order request that the order service and the
//!   synchronous baseline both apply; [`api`]: answer bodies both give.
//! - [`provenance`]: whether an event arrived on its own topic from that topic's producer.
//! - [`validate`]: the rules every event keeps beyond its types, checked on decoding.
//! - [`schema`]: JSON Schemas generated from these types; `schemas/` at the top of the
//!   repository holds their committed copies, and a test fails when the two drift.

pub mod api;
pub mod envelope;
pub mod events;
pub mod order_request;
pub mod provenance;
pub mod schema;
pub mod topics;
pub mod validate;

pub use envelope::{DecodeError, Decoded, Envelope};
pub use events::*;
pub use provenance::Misplaced;
pub use topics::Service;
