//! What a benchmark sends: products and coupons made first, then orders on a fixed schedule.
//!
//! The load is open: order `n` is due at `start + n / rate` whatever happened to the orders
//! before it, and its latency counts from that due time, not from when it was actually
//! sent. A system that falls behind therefore shows its queueing in the figures instead of
//! slowing the load down (coordinated omission).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::BenchArgs;

/// Largest stock the product service accepts: the benchmark never runs out.
const STOCK: i64 = 1_000_000_000;
/// Users the orders are spread over; each coupon belongs to one of them.
const USERS: i64 = 1_000;

/// Where the benchmark sends its requests.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Takes `POST /orders` and `GET /catalog/{id}`.
    pub orders: String,
    /// Takes `POST /products`.
    pub products: String,
    /// Takes `POST /coupons`.
    pub coupons: String,
    /// Creating products and coupons is an operator's act: the admin token, if known.
    pub admin_token: Option<String>,
}

/// What the benchmark made before the load.
#[derive(Debug, Clone)]
pub struct Seed {
    pub products: Vec<i64>,
    /// Coupon ids with their owner, each used by one order at most.
    pub coupons: Vec<(i64, i64)>,
}

/// One order sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Whether it was due after the warm-up, and so counts.
    pub measured: bool,
    /// Its due time, in microseconds since the Unix epoch.
    pub due_us: i64,
    /// From its due time to the answer; `None` when no answer came.
    pub post: Option<Duration>,
    /// The answer's status code, 0 when there was none.
    pub status: u16,
    pub order_id: Option<String>,
    /// The status the answer gave: PENDING for the saga, already final for the baseline.
    pub order_status: Option<String>,
}

#[derive(Deserialize)]
struct Created {
    product_id: Option<i64>,
    coupon_id: Option<i64>,
}

#[derive(Deserialize)]
struct Placed {
    order_id: String,
    status: String,
}

/// Products with stock enough for any run, and a coupon for each order that will carry one.
pub async fn seed(http: &reqwest::Client, args: &BenchArgs, to: &Targets) -> anyhow::Result<Seed> {
    let mut products = Vec::new();
    for n in 0..args.products.max(args.lines) {
        let body = json!({ "name": format!("bench product {n}"), "price": 1_000, "stock": STOCK });
        let url = format!("{}/products", to.products);
        let created = post(http, &url, &body, to.admin_token.as_deref()).await?;
        products.push(created.product_id.context("the answer has no product_id")?);
    }
    for id in &products {
        crate::api::wait_for_catalog(&to.orders, *id).await?;
    }
    let orders = (args.rate * (args.warmup + args.duration).as_secs_f64()).ceil() as usize;
    let wanted = (orders as f64 * args.coupon_share).ceil() as usize;
    let coupons = futures::stream::iter(0..wanted)
        .map(|n| async move {
            let user = (n as i64 % USERS) + 1;
            let body = json!({ "user_id": user, "kind": "FIXED", "value": 100 });
            let url = format!("{}/coupons", to.coupons);
            let created = post(http, &url, &body, to.admin_token.as_deref()).await?;
            anyhow::Ok((
                created.coupon_id.context("the answer has no coupon_id")?,
                user,
            ))
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Seed { products, coupons })
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    admin_token: Option<&str>,
) -> anyhow::Result<Created> {
    let mut request = http.post(url).json(body);
    if let Some(token) = admin_token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("POST {url}: is the system up?"))?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "POST {url}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }
    response.json().await.with_context(|| format!("POST {url}"))
}

/// Sends orders at `args.rate` for the warm-up and then the measured duration; returns every
/// order sent once each has its answer.
pub async fn run(
    http: &reqwest::Client,
    args: &BenchArgs,
    to: &Targets,
    seed: &Seed,
    measuring: impl FnOnce(),
) -> anyhow::Result<Vec<Sent>> {
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let wall_start = SystemTime::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let url = Arc::new(format!("{}/orders", to.orders));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let mut measuring = Some(measuring);
    let mut coupons = seed.coupons.iter();
    let total = (args.rate * (args.warmup + args.duration).as_secs_f64()).ceil() as u64;
    let bar = crate::progress::bar("orders sent", total);
    for n in 0u64.. {
        let due = start + interval.mul_f64(n as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if due >= measure_from
            && let Some(begin) = measuring.take()
        {
            begin();
        }
        let due_us = (wall_start + (due - start))
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or_default();
        let body = order_body(n, args, &seed.products, &mut coupons);
        let (http, url, sent) = (http.clone(), url.clone(), sent.clone());
        tasks.spawn(async move {
            let answer = http.post(url.as_str()).json(&body).send().await;
            let (status, placed) = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (status, response.json::<Placed>().await.ok())
                }
                Err(_) => (0, None),
            };
            let post = (status != 0).then(|| due.elapsed());
            sent.lock().expect("not poisoned").push(Sent {
                measured: due >= measure_from,
                due_us,
                post,
                status,
                order_id: placed.as_ref().map(|p| p.order_id.clone()),
                order_status: placed.map(|p| p.status),
            });
        });
        // Reap finished sends as we go, so that the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
        bar.inc(1);
    }
    bar.finish_and_clear();
    while tasks.join_next().await.is_some() {}
    let sent = std::mem::take(&mut *sent.lock().expect("not poisoned"));
    Ok(sent)
}

/// Order `n`: `args.lines` different products, one unit each, and a coupon on a share of
/// orders (the coupon's owner places the order).
fn order_body(
    n: u64,
    args: &BenchArgs,
    products: &[i64],
    coupons: &mut std::slice::Iter<'_, (i64, i64)>,
) -> serde_json::Value {
    let first = n as usize % products.len();
    let items: Vec<_> = (0..args.lines())
        .map(|line| json!({ "product_id": products[(first + line) % products.len()], "quantity": 1 }))
        .collect();
    let with_coupon = args.coupon_share > 0.0
        && ((n as f64 + 1.0) * args.coupon_share).floor() > (n as f64 * args.coupon_share).floor();
    match with_coupon.then(|| coupons.next()).flatten() {
        Some((coupon, user)) => json!({ "user_id": user, "items": items, "coupon_id": coupon }),
        None => json!({ "user_id": (n as i64 % USERS) + 1, "items": items }),
    }
}
