//! How a program is assembled and run: [`App`] is one HTTP listener plus the background
//! workers (relay, consumers, timers) that run until one shutdown token is cancelled.
//!
//! [`App::run`] is what `main` calls; [`App::spawn`] is what tests call, with a listener on
//! port 0, to get the real address back and stop the service when they choose.
//!
//! Every worker runs until shutdown. One that ends before (it returned, or it panicked) leaves
//! the service half alive, so [`App::run`] then stops everything and returns an error, and
//! [`exit`] ends the process with a non-zero status for its supervisor (compose's restart
//! policy, `shopctl up`) to start it again.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use anyhow::Context;
use axum::Router;
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::health::{Health, Observed};
use crate::http::HttpSettings;
use crate::metrics::Counter;

/// Runs `tick` every `interval` until `shutdown`, the first time one interval from now: the
/// loop of every periodic sweep (deadlines, retention, reconciliation).
pub async fn every<F, Fut>(interval: std::time::Duration, shutdown: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        // A sweep is database work: bounded, so that a connection whose server vanished
        // cannot hang it (or the shutdown that waits for it) forever.
        tokio::select! {
            () = shutdown.cancelled() => return,
            done = crate::db::bounded(tick()) => if done.is_none() {
                tracing::warn!(bound = ?crate::db::work_timeout(), "a sweep took too long; given up, to be tried at the next interval");
            }
        }
    }
}

/// Runs a reconciliation `sweep` of `kind` every `interval` until `shutdown`, adding the
/// repairs it reports to `repairs` (the runtime's `reconciliation_repairs_total{kind}`); a
/// failed sweep is logged and tried again at the next interval.
pub async fn reconcile_every<F, Fut>(
    kind: &'static str,
    interval: std::time::Duration,
    repairs: Counter,
    shutdown: CancellationToken,
    mut sweep: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, sqlx::Error>>,
{
    every(interval, shutdown, || {
        let swept = sweep();
        let repairs = &repairs;
        async move {
            match swept.await {
                Ok(repaired) => {
                    repairs.inc_by(repaired as u64);
                }
                Err(error) => {
                    tracing::warn!(%error, kind, "reconciliation sweep failed; will try again")
                }
            }
        }
    })
    .await;
}

type Worker = Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;
type Stop = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A service ready to run: a bound listener, its router, and its background workers.
pub struct App {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    workers: Vec<(&'static str, Worker)>,
    health: Health,
    limits: crate::serve::Limits,
    on_stop: Vec<Stop>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("listener", &self.listener)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl App {
    /// An app serving `api` on `listener` with everything every API has around it
    /// ([`crate::http::finish_router`]: the health and metrics routes of `observed`, request
    /// spans and counting, load shedding, the body limit, the timeout, JSON fallbacks), under
    /// `settings`' connection limits. A worker that stops shows in `observed`'s readiness.
    pub fn new(
        name: &'static str,
        listener: TcpListener,
        api: Router,
        observed: Observed,
        settings: &HttpSettings,
    ) -> Self {
        let health = observed.health.clone();
        App {
            name,
            listener,
            router: crate::http::finish_router(
                api,
                crate::health::routes(observed.clone()),
                observed.metrics.clone(),
                settings,
            ),
            workers: Vec::new(),
            health,
            limits: settings.into(),
            on_stop: Vec::new(),
        }
    }

    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))
    }

    /// Adds a background worker, called `name` in logs and readiness, that runs until the
    /// token it is given is cancelled.
    pub fn worker<F, Fut>(mut self, name: &'static str, worker: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.workers
            .push((name, Box::new(move |token| Box::pin(worker(token)))));
        self
    }

    /// Runs `stop` once the server and every worker have stopped (a producer's flush, say).
    pub fn on_stop<F, Fut>(mut self, stop: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_stop.push(Box::new(move || Box::pin(stop())));
        self
    }

    /// The service's name, as the logs say it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves and works until `shutdown` is cancelled, then stops taking requests and
    /// messages, lets the workers finish what they hold, and flushes the producer. A worker
    /// that ends (or panics) before shutdown stops the whole service, with an error.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        tracing::info!(service = self.name, %addr, "listening");
        let health = self.health;
        let mut workers = JoinSet::new();
        for (name, worker) in self.workers {
            health.up(&format!("worker:{name}"));
            let token = shutdown.clone();
            workers.spawn(async move {
                let ended = std::panic::AssertUnwindSafe(worker(token))
                    .catch_unwind()
                    .await;
                (name, ended.is_err())
            });
        }
        let server = crate::serve::serve(self.listener, self.router, self.limits, shutdown.clone());
        let mut server = std::pin::pin!(server);
        let mut broken = None;
        let served = tokio::select! {
            served = &mut server => served,
            Some(Ok((name, panicked))) = workers.join_next() => {
                let why = if panicked {
                    Some(format!("the {name} worker panicked"))
                } else if !shutdown.is_cancelled() {
                    Some(format!("the {name} worker stopped"))
                } else {
                    None
                };
                if let Some(why) = &why {
                    tracing::error!(service = self.name, "{why}; stopping the service so that it is restarted");
                    health.failing(&format!("worker:{name}"), why.clone());
                }
                broken = why;
                shutdown.cancel();
                server.await
            }
        };
        // If the server stopped on its own, stop the workers too.
        shutdown.cancel();
        while let Some(joined) = workers.join_next().await {
            if let Ok((name, true)) = joined {
                tracing::error!(
                    service = self.name,
                    worker = name,
                    "a worker panicked while stopping"
                );
                broken.get_or_insert_with(|| format!("the {name} worker panicked"));
            }
        }
        for stop in self.on_stop {
            stop().await;
        }
        tracing::info!(service = self.name, "stopped");
        served.context("serving HTTP")?;
        match broken {
            Some(why) => anyhow::bail!("{why}"),
            None => Ok(()),
        }
    }

    /// Runs in the background; the handle tells the address and stops it.
    pub fn spawn(self) -> RunningApp {
        let addr = self.local_addr();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(self.run(shutdown.clone()));
        RunningApp {
            addr,
            shutdown,
            handle,
        }
    }
}

/// Ends the process after [`App::run`]: status 0 after a clean stop, 1 (with the error
/// logged) when the service broke, so that a supervisor starts it again. It exits without
/// running destructors: Kafka clients whose broker is gone can block for a long time while
/// being dropped, and everything that matters was committed or flushed already.
pub fn exit(result: anyhow::Result<()>) -> ! {
    let result = result.inspect_err(|error| {
        tracing::error!(
            error = format!("{error:#}"),
            "the service stopped on an error"
        );
    });
    crate::telemetry::flush();
    match result {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1)
        }
    }
}

/// A service running in the background, as tests use it.
#[derive(Debug)]
pub struct RunningApp {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Stops it gracefully and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
    }

    /// Waits until it stops by itself, and returns how it ended.
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.handle.await.context("the service panicked")?
    }
}
