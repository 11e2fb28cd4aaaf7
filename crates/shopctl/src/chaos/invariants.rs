//! The invariants a chaos run checks once the system has settled:
//!
//! - every order is terminal (CONFIRMED or CANCELLED);
//! - stock is never negative, and conserved: initial = available + what confirmed orders hold
//!   (so no reservation is held by a cancelled order);
//! - a coupon is USED exactly when a confirmed order holds it, and by at most one;
//! - every order event reached the data platform exactly once in effect, and nothing else did;
//! - no dead-letter topic holds a valid event.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use contract::topics;
use eventing::kafka::KafkaSettings;
use serde_json::Value;

use super::Report;
use super::client::Client;
use super::load::{Coupon, Product};

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
    let mut held: HashMap<i64, i64> = HashMap::new();
    let mut coupon_holders: HashMap<i64, Vec<String>> = HashMap::new();
    for order in orders {
        let id = order["order_id"].as_str().unwrap_or_default().to_owned();
        match order["status"].as_str() {
            Some("CONFIRMED") => {
                report.confirmed += 1;
                for line in order["items"].as_array().into_iter().flatten() {
                    *held
                        .entry(line["product_id"].as_i64().unwrap_or_default())
                        .or_default() += line["quantity"].as_i64().unwrap_or_default();
                }
                if let Some(coupon) = order["coupon_id"].as_i64() {
                    coupon_holders.entry(coupon).or_default().push(id);
                }
            }
            Some("CANCELLED") => {
                *report
                    .cancelled
                    .entry(order["cancel_reason"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
            other => report
                .violations
                .push(format!("order {id} is not terminal: {other:?}")),
        }
    }

    // Stock: conserved once every compensation has run; poll briefly for the last releases.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut problems = Vec::new();
        for product in products {
            let now = client
                .get(&client.product, &format!("/products/{}", product.id))
                .await?;
            let (available, reserved) = (
                now["available"].as_i64().unwrap_or(-1),
                now["reserved"].as_i64().unwrap_or(-1),
            );
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
            let now = client
                .get(&client.coupon, &format!("/coupons/{}", coupon.id))
                .await?;
            let holders = coupon_holders.get(&coupon.id).cloned().unwrap_or_default();
            if holders.len() > 1 {
                problems.push(format!(
                    "coupon {} is used by {} confirmed orders",
                    coupon.id,
                    holders.len()
                ));
            }
            let used_by = now["used_by_order"].as_str().map(str::to_owned);
            match holders.first() {
                Some(holder) if used_by.as_ref() != Some(holder) => problems.push(format!(
                    "coupon {} is held by confirmed order {holder} but marked {used_by:?}",
                    coupon.id
                )),
                None if now["status"] == "USED" => problems.push(format!(
                    "coupon {} is USED by {used_by:?}, which is not a confirmed order",
                    coupon.id
                )),
                _ => {}
            }
        }
        if problems.is_empty() || Instant::now() > deadline {
            report.violations.extend(problems);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The data platform: each order event exactly once, once deliveries have caught up.
    let expected: HashSet<(String, String)> = orders
        .iter()
        .flat_map(|order| {
            let id = order["order_id"].as_str().unwrap_or_default().to_owned();
            let confirmed = order["timeline"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["event"] == "OrderConfirmed");
            let cancelled = order["status"] == "CANCELLED";
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
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let platform = client.get(&client.platform, "/v1/orders").await?;
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for kept in platform["orders"].as_array().into_iter().flatten() {
            let key = (
                kept["body"]["order_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                kept["body"]["event_type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            *seen.entry(key).or_default() += 1;
        }
        let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
        let doubled: Vec<_> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        let unexpected = seen.keys().filter(|k| !expected.contains(*k)).count();
        if (missing.is_empty() && doubled.is_empty() && unexpected == 0)
            || Instant::now() > deadline
        {
            if !missing.is_empty() {
                report.violations.push(format!(
                    "{} order events never reached the data platform (first: {:?})",
                    missing.len(),
                    missing[0]
                ));
            }
            for ((order, event), n) in doubled {
                report.violations.push(format!(
                    "the data platform kept {event} of {order} {n} times"
                ));
            }
            if unexpected > 0 {
                report.violations.push(format!(
                    "the data platform kept {unexpected} events of orders never placed"
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Dead-letter topics: nothing valid may sit there.
    let settings = KafkaSettings::new(brokers);
    for service in topics::CONSUMING_SERVICES {
        let reader = settings.clone();
        let letters =
            tokio::task::spawn_blocking(move || eventing::dlq::list(&reader, service)).await??;
        let valid = letters.iter().filter(|l| l.event_id.is_some()).count();
        if valid > 0 {
            report.violations.push(format!(
                "{valid} valid event(s) in {}: first error {}",
                topics::dlq_topic(service),
                letters[0].error
            ));
        }
    }
    Ok(report)
}
