//! The operator's and the tests' tools on a running system, shared by `shopctl` and `testkit`
//! and used by no service:
//!
//! - [`read`]: reading topics to their end, or the message at an offset.
//! - [`dlq`]: listing a service's dead letters and replaying them safely.
//! - [`topics`]: creating the contract's topics.

pub mod dlq;
pub mod read;
pub mod topics;
