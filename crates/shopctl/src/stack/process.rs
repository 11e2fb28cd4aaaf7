//! Starting and stopping the stack's processes: each in a process group of its own with its
//! output in a log, asked to stop with SIGTERM and killed when it does not, and waited for
//! without blocking the async runtime.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::Service;

/// Waits until a service answers `/health/ready` on `port` with 200, failing at once if its
/// process exits.
pub(super) async fn wait_ready(
    child: &mut Child,
    service: Service,
    port: u16,
    log: &Path,
) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let client = reqwest::Client::new();
    let outcome = kit::poll::until(
        &format!("{service} ready"),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let exited = child.try_wait().ok().flatten();
            let ready = client.get(&url).send();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                ready.await.ok()?.status().is_success().then_some(Ok(()))
            }
        },
    )
    .await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => bail!("{service} exited ({status}); see {}", log.display()),
        Err(timed_out) => bail!("{timed_out}; see {}", log.display()),
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`; `true` if it exited by itself
/// in time.
pub(super) async fn stop_child(child: &mut Child, grace: Duration) -> bool {
    terminate(child);
    if wait_for_exit(child, grace).await {
        return true;
    }
    kill(child);
    false
}

/// Sends SIGTERM, as a supervisor asks a process to stop.
pub(super) fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// SIGKILL, then reaps it. A killed process is gone at once, so the reaping waits for
/// nothing, and this is safe where blocking is not (an async thread, a `Drop`).
pub(super) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits until the process exits, up to `within`, without blocking the async runtime;
/// `true` if it did.
pub(super) async fn wait_for_exit(child: &mut Child, within: Duration) -> bool {
    kit::poll::until(
        "the process to exit",
        within,
        Duration::from_millis(100),
        || std::future::ready(child.try_wait().ok().flatten()),
    )
    .await
    .is_ok()
}

/// Starts a child in its own process group, its output appended to `log`.
pub(super) fn spawn(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))
}
