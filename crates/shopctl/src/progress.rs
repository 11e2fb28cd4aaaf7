//! Progress of long runs (chaos, bench): a bar on stderr with what is done, what is left and
//! the time it will take, drawn only when stderr is a terminal, so that logs and pipes get
//! the plain `==>` steps alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `total` steps, labelled `what` (`orders sent`, `orders settled`).
pub fn bar(what: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "    {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, {eta} left)",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

/// A bar that follows `count` (updated by other tasks) until it is dropped; with `message`,
/// its text is refreshed with the counter's position, for figures a count alone does not say.
pub struct Following {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Following {
    pub fn new(
        what: &str,
        total: u64,
        count: Arc<AtomicUsize>,
        message: impl Fn() -> String + Send + 'static,
    ) -> Self {
        let bar = bar(what, total);
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                ticking.set_position(count.load(Ordering::SeqCst) as u64);
                ticking.set_message(message());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Following { bar, ticker }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
