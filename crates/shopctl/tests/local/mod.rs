//! Shared by the tests that run the local stack as `shopctl up` runs it.

// Each test target uses a part of it.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
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
pub async fn start_stack(label: &str) -> TestStack {
    start_stack_with(label, &[]).await
}

/// [`start_stack`], with more environment variables for every service.
pub async fn start_stack_with(label: &str, env: &[(&str, &str)]) -> TestStack {
    let shopctl = Path::new(env!("CARGO_BIN_EXE_shopctl"));
    TestStack::start(StackConfig {
        data_dir: fresh_folder(label),
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
}

/// A fresh folder for a test under the system's temporary folder, named after `label`.
pub fn fresh_folder(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!("shopctl-{label}-{}", uuid::Uuid::new_v4().simple()))
}

/// A test's stack, stopped when dropped. Its folder goes with it when the test passed; when
/// the test failed, the folder stays and its path is printed, since the services' logs in it
/// are what say why.
pub struct TestStack(Option<Stack>);

impl TestStack {
    /// Starts the stack `config` describes, or fails the test.
    pub async fn start(config: StackConfig) -> TestStack {
        TestStack(Some(Stack::start(config).await.expect("the stack starts")))
    }
}

impl Deref for TestStack {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        self.0
            .as_ref()
            .expect("a test's stack is there until it is dropped")
    }
}

impl DerefMut for TestStack {
    fn deref_mut(&mut self) -> &mut Stack {
        self.0
            .as_mut()
            .expect("a test's stack is there until it is dropped")
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let Some(stack) = self.0.take() else { return };
        let folder = stack.data_dir().to_path_buf();
        // The processes go first, so that none writes into the folder as it is removed.
        drop(stack);
        if std::thread::panicking() {
            eprintln!(
                "the failed test's stack, with its logs: {}",
                folder.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&folder);
        }
    }
}
