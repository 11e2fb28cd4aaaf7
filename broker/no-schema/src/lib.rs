//! The interface of Tansu's `tansu-schema` crate that `tansu-broker` and `tansu-storage` use,
//! with nothing behind it (saga patch 10, `broker/PATCHES.md`).
//!
//! Tansu validates produced batches against a schema registry and copies them into a lake
//! house when either is configured. The local broker configures neither, yet compiling them
//! cost about a quarter of its build (a scripting engine, Avro, Protobuf, JSON Schema, an AWS
//! client and its TLS provider). Here [`Registry`] and [`lake::House`] are enums without
//! variants: no value of either can exist, so every `Option<Registry>` and `Option<House>` in
//! Tansu's crates is `None`, the code paths that would use one are never taken, and the
//! compiler proves it (each method body is an empty `match`).

use std::fmt::{self, Debug, Formatter};
use tansu_sans_io::{ErrorCode, record::inflated::Batch};

/// Errors of schema validation. Tansu's storage turns a Kafka error code into the same code
/// in its answer; with no registry nothing here ever fails.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?}")]
    Api(ErrorCode),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A schema registry that cannot be built: the local broker validates no schemas.
#[derive(Clone)]
pub enum Registry {}

impl Debug for Registry {
    fn fmt(&self, _: &mut Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl Registry {
    /// Validates a batch produced to a topic against the topic's schemas.
    pub async fn validate(&self, _topic: &str, _batch: &Batch) -> Result<()> {
        match *self {}
    }
}

pub mod lake {
    //! Lake houses (Delta, Iceberg, Parquet) that batches would be copied into: none here.

    use super::Result;
    use std::fmt::{self, Debug, Formatter};
    use tansu_sans_io::{
        describe_configs_response::DescribeConfigsResult, record::inflated::Batch,
    };

    /// A lake house that cannot be built: the local broker copies nothing out.
    #[derive(Clone)]
    pub enum House {}

    impl Debug for House {
        fn fmt(&self, _: &mut Formatter<'_>) -> fmt::Result {
            match *self {}
        }
    }

    /// What Tansu's storage engines ask of a lake house.
    pub trait LakeHouse: Clone + Debug + Send + Sync + 'static {
        /// Stores a batch of a topic's partition, from `offset` on.
        fn store(
            &self,
            topic: &str,
            partition: i32,
            offset: i64,
            batch: &Batch,
            config: DescribeConfigsResult,
        ) -> impl Future<Output = Result<()>> + Send;

        /// Runs the lake house's periodic maintenance.
        fn maintain(&self) -> impl Future<Output = Result<()>> + Send;
    }

    impl LakeHouse for House {
        async fn store(
            &self,
            _topic: &str,
            _partition: i32,
            _offset: i64,
            _batch: &Batch,
            _config: DescribeConfigsResult,
        ) -> Result<()> {
            match *self {}
        }

        async fn maintain(&self) -> Result<()> {
            match *self {}
        }
    }
}
