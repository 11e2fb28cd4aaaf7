//! The invariants a chaos run checks once the system has settled:
//!
//! - every order is terminal (CONFIRMED or CANCELLED);
//! - stock is never negative, and conserved: initial = available + what confirmed orders hold
//!   (so no reservation is held by a cancelled order);
//! - a coupon is USED exactly when a confirmed order holds it, and by at most one;
//! - every order event reached the data platform exactly once in effect, and nothing else did;
//! - no dead-letter topic holds a valid event.

use contract::OrderStatus;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use eventing::kafka::KafkaSettings;
use serde::Deserialize;
use serde_json::Value;

use super::Report;
use super::client::Client;
use super::load::{Coupon, Product};

/// An order as `GET /orders/{id}` shows it: the fields the checks read, each required, so that
/// an answer without one is an error instead of a default that could hide a violation.
#[derive(Debug, Deserialize)]
struct OrderView {
    order_id: String,
    status: String,
    items: Vec<LineView>,
    coupon_id: Option<i64>,
    cancel_reason: Option<String>,
    timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Deserialize)]
struct LineView {
    product_id: i64,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
struct TimelineEntry {
    event: String,
}

/// A product's stock as `GET /products/{id}` shows it.
#[derive(Debug, Deserialize)]
struct ProductView {
    available: i64,
    reserved: i64,
}

/// A coupon as `GET /coupons/{id}` shows it.
#[derive(Debug, Deserialize)]
struct CouponView {
    status: String,
    used_by_order: Option<String>,
}

/// What the data-platform mock kept (`GET /v1/orders`).
#[derive(Debug, Deserialize)]
struct PlatformView {
    orders: Vec<KeptView>,
}

#[derive(Debug, Deserialize)]
struct KeptView {
    body: KeptEvent,
}

#[derive(Debug, Deserialize)]
struct KeptEvent {
    order_id: String,
    event_type: String,
}

/// Reads an answer as `T`, naming what was wrong with it.
fn view<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value.clone())
        .with_context(|| format!("{what} is not as expected: {value}"))
}

/// Checks every invariant on the settled system.
pub(super) async fn check(
    client: &Client,
    brokers: &str,
    orders: &[Value],
    products: &[Product],
    coupons: &[Coupon],
) -> anyhow::Result<Report> {
    let mut report = Report {
        orders: orders.len(),
        ..Report::default()
    };
    let orders: Vec<OrderView> = orders
        .iter()
        .map(|order| view("an order", order.clone()))
        .collect::<anyhow::Result<_>>()?;
    let mut held: HashMap<i64, i64> = HashMap::new();
    let mut coupon_holders: HashMap<i64, Vec<String>> = HashMap::new();
    for order in &orders {
        let id = &order.order_id;
        match OrderStatus::parse(&order.status) {
            Some(OrderStatus::Confirmed) => {
                report.confirmed += 1;
                for line in &order.items {
                    *held.entry(line.product_id).or_default() += line.quantity;
                }
                if let Some(coupon) = order.coupon_id {
                    coupon_holders.entry(coupon).or_default().push(id.clone());
                }
            }
            Some(OrderStatus::Cancelled) => {
                let reason = order
                    .cancel_reason
                    .clone()
                    .with_context(|| format!("cancelled order {id} has no cancel_reason"))?;
                *report.cancelled.entry(reason).or_default() += 1;
            }
            Some(OrderStatus::Pending) | None => report
                .violations
                .push(format!("order {id} is not terminal: {}", order.status)),
        }
    }

    // Stock: conserved once every compensation has run; poll briefly for the last releases.
    let stock = settled_problems(Duration::from_secs(30), || async {
        let mut problems = Vec::new();
        for product in products {
            let path = format!("/products/{}", product.id);
            let now: ProductView = view(&path, client.get(&client.product, &path).await?)?;
            let (available, reserved) = (now.available, now.reserved);
            let holds = held.get(&product.id).copied().unwrap_or_default();
            if available < 0 || reserved < 0 {
                problems.push(format!(
                    "product {} has negative stock: {available} available, {reserved} reserved",
                    product.id
                ));
            }
            if reserved != holds || available + reserved != product.stock {
                problems.push(format!(
                    "product {}: started with {}, now {available} available + {reserved} reserved, confirmed orders hold {holds}",
                    product.id, product.stock
                ));
            }
        }
        for coupon in coupons {
            let path = format!("/coupons/{}", coupon.id);
            let now: CouponView = view(&path, client.get(&client.coupon, &path).await?)?;
            let holders = coupon_holders.get(&coupon.id).cloned().unwrap_or_default();
            if holders.len() > 1 {
                problems.push(format!(
                    "coupon {} is used by {} confirmed orders",
                    coupon.id,
                    holders.len()
                ));
            }
            let used_by = now.used_by_order;
            match holders.first() {
                Some(holder) if used_by.as_ref() != Some(holder) => problems.push(format!(
                    "coupon {} is held by confirmed order {holder} but marked {used_by:?}",
                    coupon.id
                )),
                None if now.status == "USED" => problems.push(format!(
                    "coupon {} is USED by {used_by:?}, which is not a confirmed order",
                    coupon.id
                )),
                _ => {}
            }
        }
        Ok(problems)
    })
    .await;
    report.violations.extend(stock);

    // The data platform: each order event exactly once, once deliveries have caught up.
    let expected: HashSet<(String, String)> = orders
        .iter()
        .flat_map(|order| {
            let id = order.order_id.clone();
            let confirmed = order.timeline.iter().any(|e| e.event == "OrderConfirmed");
            let cancelled = order.status == OrderStatus::Cancelled.as_str();
            let mut events = vec![(id.clone(), "OrderCreated".to_owned())];
            if confirmed {
                events.push((id.clone(), "OrderConfirmed".to_owned()));
            }
            if cancelled {
                events.push((id, "OrderCancelled".to_owned()));
            }
            events
        })
        .collect();
    let platform = settled_problems(Duration::from_secs(120), || async {
        let platform: PlatformView = view(
            "what the data platform kept",
            client.get(&client.platform, "/v1/orders").await?,
        )?;
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for kept in platform.orders {
            *seen
                .entry((kept.body.order_id, kept.body.event_type))
                .or_default() += 1;
        }
        let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
        let doubled: Vec<_> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        let unexpected = seen.keys().filter(|k| !expected.contains(*k)).count();
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!(
                "{} order events never reached the data platform (first: {:?})",
                missing.len(),
                missing[0]
            ));
        }
        for ((order, event), n) in doubled {
            problems.push(format!(
                "the data platform kept {event} of {order} {n} times"
            ));
        }
        if unexpected > 0 {
            problems.push(format!(
                "the data platform kept {unexpected} events of orders never placed"
            ));
        }
        Ok(problems)
    })
    .await;
    report.violations.extend(platform);

    // Dead-letter topics: nothing valid may sit there.
    let settings = KafkaSettings::new(brokers);
    for service in contract::Service::ALL {
        let reader = settings.clone();
        let letters =
            tokio::task::spawn_blocking(move || ops::dlq::list(&reader, service.name())).await??;
        let valid = letters.iter().filter(|l| l.event_id.is_some()).count();
        if valid > 0 {
            report.violations.push(format!(
                "{valid} valid event(s) in {}: first error {}",
                service.dlq_topic(),
                letters[0].error
            ));
        }
    }
    Ok(report)
}

/// Runs `check` every half second until it finds nothing wrong or `within` has passed, and
/// returns what it found last: the system settles (compensations, deliveries) for a while
/// after the load ends. A check that cannot run at all is a problem too.
async fn settled_problems<F, Fut>(within: Duration, mut check: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<String>>>,
{
    let outcome = kit::poll::retry(within, Duration::from_millis(500), || {
        let checked = check();
        async move {
            match checked.await {
                Ok(problems) if problems.is_empty() => Ok(()),
                Ok(problems) => Err(problems),
                Err(error) => Err(vec![format!("the check could not run: {error:#}")]),
            }
        }
    })
    .await;
    outcome.err().unwrap_or_default()
}
