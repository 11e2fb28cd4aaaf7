//! Shared by the tests that run the local stack as `shopctl up` runs it.

// Each test target uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use shopctl::stack::{Stack, StackConfig};

/// The local stack in a fresh temporary folder on free ports, with the binaries of this
/// build: Tansu on SQLite storage, every service a process on its own SQLite file.
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
        broker_port: testkit::free_port(),
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
