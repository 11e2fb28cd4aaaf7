//! Shared by the tests that run the local stack as `shopctl up` runs it.

// Each test target uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use shopctl::stack::{BrokerKind, Stack, StackConfig};

/// The stack's broker: the one `TEST_BROKER` names.
pub fn stack_broker() -> BrokerKind {
    match testkit::BrokerKind::from_env() {
        testkit::BrokerKind::Tansu => BrokerKind::Tansu,
        testkit::BrokerKind::Kafka => BrokerKind::Kafka,
    }
}

/// The local stack in a fresh temporary folder on free ports, with the binaries of this
/// build: the broker `TEST_BROKER` names (Tansu on SQLite storage, or Apache Kafka), every
/// service a process on its own SQLite file.
pub async fn start_stack(label: &str) -> Stack {
    start_stack_with(label, &[]).await
}

/// [`start_stack`], with more environment variables for every service.
pub async fn start_stack_with(label: &str, env: &[(&str, &str)]) -> Stack {
    let shopctl = Path::new(env!("CARGO_BIN_EXE_shopctl"));
    let data_dir: PathBuf =
        std::env::temp_dir().join(format!("shopctl-{label}-{}", uuid::Uuid::new_v4().simple()));
    Stack::start(StackConfig {
        data_dir,
        // Kafka's controller takes the port after the broker's.
        broker_port: testkit::free_port_run(2),
        broker: stack_broker(),
        http_port_base: testkit::free_port_run(11),
        build: true,
        bin_dir: shopctl.parent().map(Path::to_path_buf),
        broker_storage: Default::default(),
        database_urls: Vec::new(),
        env: std::iter::once(("RUST_LOG", "info"))
            .chain(env.iter().copied())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    })
    .await
    .expect("the stack starts")
}
