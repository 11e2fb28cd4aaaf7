//! `shopctl console`: a live web page of the running saga, rendered on the server.
//!
//! - [`feed`]: the recent orders and each one's events across the services, read from the saga
//!   topics by a reader of its own (it commits nothing, so it never disturbs the services).
//! - [`status`]: each service's readiness, consumer lag, outbox backlog and breaker, from its
//!   health and metrics endpoints, and the dead letters waiting in each dead-letter topic.
//! - [`page`]: the HTML. The page is complete as served; a few lines of script then follow
//!   `GET /events` (server-sent events) and swap in each part as it changes. There is no
//!   JavaScript build and nothing loaded from elsewhere.
//!
//! Routes: `GET /` the page, `GET /events` its updates, `POST /orders` the demo form (placed
//! through the order service's API), `POST /dead-letters/{service}/replay` what
//! `shopctl dlq replay --offset` does, and `GET /health/live`, `GET /health/ready`.
//!
//! The console acts for whoever has its page open, so it refuses what a page of another site
//! could make a browser send ([`guard`]): a request whose `Host` is not one of its own names
//! (DNS rebinding) and a `POST` whose `Origin` (or `Referer`) is another site's (cross-site
//! request forgery). It is served as the services are, by the service kit's [`kit::App`]
//! (the header read timeout, the connection and request caps, the request time limit, request
//! spans and counting, `/health/*` and `/metrics`), with a body limit of its own; its calls to
//! the services time out ([`crate::api::http_client`]).

pub mod feed;
pub mod page;
pub mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use eventing::kafka::KafkaSettings;
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use kit::health::{Health, Observed};

use crate::Cli;
use crate::api::{Call, call};
use feed::Feed;
use status::{Status, Watched};

/// `shopctl console`'s options; the services' URLs and the brokers are `shopctl`'s own.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// Where the console listens.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8088")]
    pub addr: SocketAddr,
    /// How often each service's health and metrics are read.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Host names the console answers to, besides `localhost`, `127.0.0.1` and `::1` (any
    /// port): add the name it is reached by when it is not on the loopback. A request naming
    /// another `Host` gets 421, so that a page of another site cannot read it by DNS
    /// rebinding.
    #[arg(
        long = "allowed-host",
        env = "CONSOLE_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    #[command(flatten)]
    pub log: kit::telemetry::LogSettings,
}

#[derive(Clone)]
struct Console {
    feed: Feed,
    status: Status,
    watched: Vec<Watched>,
    kafka: KafkaSettings,
    order_url: String,
    forwarder_url: String,
    /// What replaying needs: the operator types it into the page's form.
    admin: kit::admin::AdminToken,
    /// Sent on to the forwarder when a replay retries deliveries.
    admin_token: Option<String>,
}

/// Serves the console until Ctrl-C or SIGTERM.
pub async fn run(cli: &Cli, args: &ConsoleArgs) -> anyhow::Result<()> {
    kit::telemetry::init("console", &args.log);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding the console to {}", args.addr))?;
    let kafka = cli.kafka();
    let (router, feed) = router(cli, &kafka, args)?;
    println!(
        "==> the saga console is at http://{}",
        listener.local_addr()?
    );
    let settings = kit::http::HttpSettings {
        body_limit_bytes: BODY_LIMIT,
        ..kit::http::HttpSettings::default()
    };
    let observed =
        Observed::new(kit::Metrics::new(), Health::new()).check(FeedCaughtUp(feed.clone()));
    let served = kit::App::new("console", listener, router, observed, &settings)
        .run(kit::telemetry::shutdown_on_signal())
        .await;
    feed.stop();
    served
}

/// Ready once the feed has read the saga topics to their end.
struct FeedCaughtUp(Feed);

impl kit::health::Check for FeedCaughtUp {
    fn name(&self) -> &'static str {
        "feed"
    }

    fn look(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + '_>> {
        let caught_up = self.0.caught_up();
        Box::pin(async move { (!caught_up).then(|| "still reading the saga topics".to_owned()) })
    }
}

/// Most bytes of a form the console reads.
const BODY_LIMIT: usize = 16 * 1024;

/// The names the console answers to.
#[derive(Debug, Clone)]
struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    fn new(extra: &[String]) -> Self {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]", "::1"]
            .iter()
            .map(|n| (*n).to_owned())
            .collect();
        names.extend(extra.iter().map(|n| n.trim().to_ascii_lowercase()));
        AllowedHosts(names)
    }

    /// Whether `authority` (`host` or `host:port`) names the console.
    fn allows(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        let host = match authority.rsplit_once(':') {
            // An IPv6 address without a port has colons of its own but no `]` before them.
            Some((host, port))
                if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') =>
            {
                host
            }
            _ => authority.as_str(),
        };
        self.0.iter().any(|name| name == host || *name == authority)
    }
}

/// Refuses what a page of another site could make a browser send: any request but the health
/// checks whose `Host` is not one of the console's names (421), and a `POST` whose `Origin`,
/// or else `Referer`, is not this console's own (403). A `POST` with neither comes from no
/// browser (every browser sends `Origin` with a form it posts to another site) and passes.
async fn guard(
    State(allowed): State<AllowedHosts>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path.starts_with("/health/") {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !allowed.allows(&host) {
        return refused(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            format!(
                "the console does not answer to the host {host:?}; add it to CONSOLE_ALLOWED_HOSTS if it is one of its names"
            ),
        );
    }
    if request.method() == axum::http::Method::POST {
        let from = |name| {
            request
                .headers()
                .get(name)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        };
        let origin = from(header::ORIGIN).or_else(|| from(header::REFERER));
        if let Some(origin) = origin {
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .and_then(|rest| rest.split('/').next());
            if authority.is_none_or(|a| !a.eq_ignore_ascii_case(&host)) {
                return refused(
                    StatusCode::FORBIDDEN,
                    "cross_site_request",
                    format!(
                        "a form of the console is sent from the console's own page, not from {origin:?}"
                    ),
                );
            }
        }
    }
    next.run(request).await
}

fn refused(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn router(cli: &Cli, kafka: &KafkaSettings, args: &ConsoleArgs) -> anyhow::Result<(Router, Feed)> {
    let refresh = args.refresh;
    let url_of = |service| match service {
        contract::Service::OrderService => cli.order_url.clone(),
        contract::Service::ProductService => cli.product_url.clone(),
        contract::Service::CouponService => cli.coupon_url.clone(),
        contract::Service::AnalyticsForwarder => cli.forwarder_url.clone(),
    };
    // Every service of the contract consumes, and so has a lag and a dead-letter topic.
    let watched: Vec<Watched> = contract::Service::ALL
        .into_iter()
        .map(|service| Watched {
            name: service.name(),
            url: url_of(service),
            consumes: !service.consumes().is_empty(),
        })
        .collect();
    let feed = Feed::start(kafka).context("reading the saga topics")?;
    let console = Console {
        feed: feed.clone(),
        status: Status::start(watched.clone(), kafka.clone(), refresh),
        watched,
        kafka: kafka.clone(),
        order_url: cli.order_url.trim_end_matches('/').to_owned(),
        forwarder_url: cli.forwarder_url.clone(),
        admin: kit::admin::AdminToken::new(cli.admin_token())
            .context("the admin token (ADMIN_TOKEN)")?,
        admin_token: cli.admin_token().map(str::to_owned),
    };
    // The kit's time limit bounds how long a route takes to answer, not how long its body
    // streams: the event stream answers at once and then stays open.
    let router = Router::new()
        .route("/", get(index))
        .route("/orders", post(place))
        .route("/dead-letters/{service}/replay", post(replay))
        .route("/events", get(events))
        .with_state(console)
        .layer(axum::middleware::from_fn_with_state(
            AllowedHosts::new(&args.allowed_hosts),
            guard,
        ));
    Ok((router, feed))
}

/// What the page says after a form was sent.
#[derive(Debug, Default, Deserialize)]
struct Notice {
    placed: Option<String>,
    replayed: Option<String>,
    error: Option<String>,
}

async fn index(State(console): State<Console>, Query(notice): Query<Notice>) -> Html<String> {
    let notice = match notice {
        Notice {
            error: Some(error), ..
        } => Some(format!("Failed: {error}")),
        Notice {
            placed: Some(id), ..
        } => Some(format!(
            "Placed order {id}; it appears below as its events arrive."
        )),
        Notice {
            replayed: Some(what),
            ..
        } => Some(format!("Replayed: {what}")),
        _ => None,
    };
    Html(page::page(
        &console.status.services(),
        &console.feed.recent(),
        &console.status.dead_letters(),
        notice.as_deref(),
    ))
}

/// The page's parts, each sent again whenever it has changed.
async fn events(
    State(console): State<Console>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut orders = console.feed.changes();
    let mut status = console.status.changes();
    let stream = async_stream(move |sender| async move {
        let mut last: [String; 3] = Default::default();
        loop {
            let parts = [
                (
                    "services",
                    page::services_fragment(&console.status.services()),
                ),
                ("orders", page::orders_fragment(&console.feed.recent())),
                (
                    "dead-letters",
                    page::dead_letters_fragment(&console.status.dead_letters()),
                ),
            ];
            for (n, (name, html)) in parts.into_iter().enumerate() {
                if last[n] != html {
                    let event = SseEvent::default().event(name).data(&html);
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                    last[n] = html;
                }
            }
            // Wait for news, at most a few times a second so a busy saga stays cheap to show.
            tokio::select! {
                changed = orders.changed() => if changed.is_err() { return },
                changed = status.changed() => if changed.is_err() { return },
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by a task: `produce` sends into the channel until the client goes away.
fn async_stream<F, Fut>(produce: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<SseEvent, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    tokio::spawn(produce(sender));
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// The demo form.
#[derive(Debug, Deserialize)]
struct OrderForm {
    user_id: String,
    product_id: String,
    quantity: String,
    #[serde(default)]
    coupon_id: String,
}

fn back_with(key: &str, value: &str) -> Response {
    let query: String = url_encode(value);
    Redirect::to(&format!("./?{key}={query}")).into_response()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn place(State(console): State<Console>, Form(form): Form<OrderForm>) -> Response {
    let number = |field: &str, text: &str| -> Result<i64, String> {
        text.trim()
            .parse::<i64>()
            .map_err(|_| format!("{field} must be a whole number, not {text:?}"))
    };
    let body = (|| -> Result<serde_json::Value, String> {
        let coupon = match form.coupon_id.trim() {
            "" => None,
            text => Some(number("coupon", text)?),
        };
        Ok(json!({
            "user_id": number("user", &form.user_id)?,
            "items": [{
                "product_id": number("product", &form.product_id)?,
                "quantity": number("quantity", &form.quantity)?,
            }],
            "coupon_id": coupon,
        }))
    })();
    let body = match body {
        Ok(body) => body,
        Err(message) => return back_with("error", &message),
    };
    let answer = call(Call::new(
        contract::Service::OrderService.name(),
        reqwest::Method::POST,
        format!("{}/orders", console.order_url),
        Some(body),
    ))
    .await;
    match answer {
        Ok(order) => back_with("placed", order["order_id"].as_str().unwrap_or_default()),
        Err(error) => back_with("error", &format!("{error:#}")),
    }
}

/// The replay form: the operator's admin token and the one letter to replay.
#[derive(Debug, Deserialize)]
struct ReplayForm {
    #[serde(default)]
    token: String,
    /// The letter's offset in the dead-letter topic.
    offset: Option<i64>,
}

async fn replay(
    State(console): State<Console>,
    Path(service): Path<String>,
    Form(form): Form<ReplayForm>,
) -> Response {
    // Replaying is an operator's act, as `shopctl dlq replay` is: it takes the admin token.
    if !console.admin.accepts(form.token.trim()) {
        return kit::ApiError::new(
            kit::ErrorCode::Unauthorized,
            "replaying dead letters needs the admin token (ADMIN_TOKEN)",
        )
        .into_response();
    }
    let Some(offset) = form.offset else {
        return kit::ApiError::new(
            kit::ErrorCode::InvalidBody,
            "a replay names one dead letter: the form's offset is missing",
        )
        .into_response();
    };
    let Some(watched) = console.watched.iter().find(|w| w.name == service) else {
        return kit::ApiError::new(
            kit::ErrorCode::NotFound,
            format!("{service} has no dead letters to replay: it is not a consuming service"),
        )
        .into_response();
    };
    let (settings, name) = (console.kafka.clone(), watched.name);
    let letters = match tokio::task::spawn_blocking(move || ops::dlq::list(&settings, name)).await {
        Ok(Ok(letters)) => letters,
        Ok(Err(error)) => return back_with("error", &format!("reading dead letters: {error}")),
        Err(error) => return back_with("error", &error.to_string()),
    };
    let letters = match crate::dlq::Choice::Offset(offset).pick(name, letters) {
        Ok(letters) => letters,
        Err(error) => return back_with("error", &format!("{error:#}")),
    };
    let token = console.admin_token.as_deref();
    let replayed =
        crate::dlq::replay(&console.kafka, &console.forwarder_url, token, name, letters).await;
    console
        .status
        .refresh_dead_letters(&console.watched, &console.kafka)
        .await;
    match replayed {
        Ok(done) => match done.refused.first() {
            Some((offset, reason)) => back_with(
                "error",
                &format!("the dead letter at offset {offset} of {name} was not replayed: {reason}"),
            ),
            None if done.undelivered > 0 => back_with(
                "replayed",
                &format!(
                    "the delivery of dead letter {offset} of {name} is pending again ({} delivery(ies))",
                    done.retried
                ),
            ),
            None => back_with(
                "replayed",
                &format!("dead letter {offset} of {name} is back on its topic"),
            ),
        },
        Err(error) => back_with("error", &format!("{error:#}")),
    }
}

/// Ready once the reader has caught up with the saga topics, so the page is complete.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_answers_to_its_loopback_names_and_those_it_is_given_only() {
        let allowed = AllowedHosts::new(&["Console.example".to_owned()]);
        for host in [
            "localhost:8088",
            "127.0.0.1",
            "[::1]:8088",
            "console.example:80",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in [
            "evil.example:8088",
            "",
            "127.0.0.1.evil.example",
            "localhost.evil:8088",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn notices_survive_the_round_trip_through_a_query_string() {
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
