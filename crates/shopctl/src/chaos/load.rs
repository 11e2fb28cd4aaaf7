//! The load of a chaos run: products and coupons to order, orders placed at a fixed pace by a
//! few workers (random products and quantities, some products running out, a coupon on a
//! quarter of them, a tenth cancelled by their customer), the orders placed once the faults
//! are over, and waiting for every order to settle.

use contract::OrderStatus;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use super::client::Client;
use super::{ChaosArgs, LIVENESS_ORDERS, LIVENESS_WITHIN};
use crate::stack::step;

/// A product as created: its id and initial stock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Product {
    pub(super) id: i64,
    pub(super) stock: i64,
}

/// A coupon as created: its id and owner.
#[derive(Debug, Clone, Copy)]
pub(super) struct Coupon {
    pub(super) id: i64,
    pub(super) user: i64,
}

pub(super) async fn seed(
    client: &Client,
    args: &ChaosArgs,
) -> anyhow::Result<(Vec<Product>, Vec<Coupon>)> {
    step(&format!(
        "creating {} products and {} coupons",
        args.products, args.coupons
    ));
    let mut products = Vec::new();
    for n in 0..args.products {
        // Enough stock for most orders, so that the run confirms many and still runs some
        // products out.
        let per_product = (args.orders as i64 * 4 / args.products.max(1) as i64).max(10);
        let stock = rand::rng().random_range(per_product / 2..=per_product);
        let price = rand::rng().random_range(100..5000);
        products.push(create_product(client, &format!("chaos product {n}"), price, stock).await?);
    }
    let mut coupons = Vec::new();
    for n in 0..args.coupons {
        let user = (n % 50) as i64 + 1;
        let (kind, value) = if n % 2 == 0 {
            ("PERCENT", 10)
        } else {
            ("FIXED", 300)
        };
        let body = json!({ "user_id": user, "kind": kind, "value": value });
        let (status, coupon) = client.post(&client.coupon, "/coupons", body).await?;
        if status != 201 {
            bail!("creating a coupon: {status} {coupon}");
        }
        coupons.push(Coupon {
            id: coupon["coupon_id"].as_i64().context("coupon id")?,
            user,
        });
    }
    for product in &products {
        client.wait_for_catalog(product.id).await?;
    }
    Ok((products, coupons))
}

/// A product with ample stock that the load never orders, for the orders placed after the
/// faults.
pub(super) async fn seed_probe_product(client: &Client) -> anyhow::Result<Product> {
    let product = create_product(client, "chaos liveness probe", 100, 10_000).await?;
    client.wait_for_catalog(product.id).await?;
    Ok(product)
}

/// Creates a product through the product service's API.
async fn create_product(
    client: &Client,
    name: &str,
    price: i64,
    stock: i64,
) -> anyhow::Result<Product> {
    let body = json!({ "name": name, "price": price, "stock": stock });
    let (status, product) = client.post(&client.product, "/products", body).await?;
    if status != 201 {
        bail!("creating a product: {status} {product}");
    }
    let id = product["product_id"].as_i64().context("product id")?;
    Ok(Product { id, stock })
}

/// Places [`LIVENESS_ORDERS`] orders one after another once the faults are over; returns
/// their ids and how long each took from its first try to CONFIRMED, `None` where it did not
/// within [`LIVENESS_WITHIN`].
pub(super) async fn orders_after_faults(
    client: &Client,
    probe: Product,
) -> anyhow::Result<(Vec<String>, Vec<Option<Duration>>)> {
    let mut ids = Vec::new();
    let mut took = Vec::new();
    for n in 0..LIVENESS_ORDERS {
        let started = Instant::now();
        let key = format!("chaos-after-faults-{n}-{}", uuid::Uuid::new_v4());
        let body = json!({ "user_id": 1, "items": [{ "product_id": probe.id, "quantity": 1 }] });
        let (status, order) = client.place(&key, &body).await?;
        if status != 202 && status != 200 {
            bail!("placing an order after the faults: {status} {order}");
        }
        let id = order["order_id"].as_str().context("order id")?.to_owned();
        ids.push(id.clone());
        let mut confirmed = None;
        while started.elapsed() < LIVENESS_WITHIN {
            let order = client.get(&client.order, &format!("/orders/{id}")).await?;
            match order["status"].as_str().and_then(OrderStatus::parse) {
                Some(OrderStatus::Confirmed) => {
                    confirmed = Some(started.elapsed());
                    break;
                }
                Some(OrderStatus::Cancelled) => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        took.push(confirmed);
    }
    Ok((ids, took))
}

/// Places the orders with `concurrency` workers; returns their ids.
pub(super) async fn place_orders(
    client: &Client,
    args: &ChaosArgs,
    products: &[Product],
    coupons: &[Coupon],
    progress: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let pace = Duration::from_secs_f64(1.0 / args.orders_per_second.max(0.01));
    let workers = (0..args.concurrency).map(|_| {
        let (client, next, progress) = (client.clone(), next.clone(), progress.clone());
        let (products, coupons, total) = (products.to_vec(), coupons.to_vec(), args.orders);
        tokio::spawn(async move {
            let mut placed = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    return Ok::<_, anyhow::Error>(placed);
                }
                // Order n leaves no earlier than n paces after the start.
                tokio::time::sleep_until(started + pace * n as u32).await;
                placed.push(place_one(&client, n, &products, &coupons).await?);
                progress.fetch_add(1, Ordering::SeqCst);
            }
        })
    });
    let mut placed = Vec::new();
    for worker in futures::future::join_all(workers).await {
        placed.extend(worker.context("an order worker panicked")??);
    }
    Ok(placed)
}

/// One random order, perhaps cancelled by its user; returns its id.
async fn place_one(
    client: &Client,
    n: usize,
    products: &[Product],
    coupons: &[Coupon],
) -> anyhow::Result<String> {
    let (body, cancel) = {
        let mut rng = rand::rng();
        let user = rng.random_range(1..=50i64);
        let lines = rng.random_range(1..=3usize);
        let chosen: Vec<&Product> = products.choose_multiple(&mut rng, lines).collect();
        let items: Vec<Value> = chosen
            .iter()
            .map(|p| json!({ "product_id": p.id, "quantity": rng.random_range(1..=3) }))
            .collect();
        let mut body = json!({ "user_id": user, "items": items });
        if rng.random_bool(0.25) {
            // Mostly the user's own coupons, sometimes anyone's.
            let own: Vec<&Coupon> = coupons.iter().filter(|c| c.user == user).collect();
            let coupon = if rng.random_bool(0.8) && !own.is_empty() {
                own.choose(&mut rng).copied()
            } else {
                coupons.choose(&mut rng)
            };
            if let Some(coupon) = coupon {
                body["coupon_id"] = json!(coupon.id);
            }
        }
        let cancel = rng
            .random_bool(0.1)
            .then(|| Duration::from_millis(rng.random_range(0..300)));
        (body, cancel)
    };
    let mut key = format!("chaos-{n}");
    let mut body = body;
    let id = loop {
        let (status, order) = client.place(&key, &body).await?;
        match status {
            200 | 202 => break order["order_id"].as_str().context("order id")?.to_owned(),
            // A coupon the order service knows is taken: the customer orders without it.
            409 | 422 if body.get("coupon_id").is_some() => {
                body.as_object_mut().map(|b| b.remove("coupon_id"));
                key.push_str("-without-coupon");
            }
            other => bail!("placing an order: {other} {order}"),
        }
    };
    if let Some(delay) = cancel {
        tokio::time::sleep(delay).await;
        client
            .post(&client.order, &format!("/orders/{id}/cancel"), json!({}))
            .await?;
    }
    Ok(id)
}

/// Waits until every order is terminal; returns them all.
pub(super) async fn settle(
    client: &Client,
    ids: &[String],
    within: Duration,
) -> anyhow::Result<Vec<Value>> {
    // Settled orders are kept between rounds, so each round asks only about the rest.
    let settled = std::sync::Mutex::new(HashMap::new());
    let count = Arc::new(AtomicUsize::new(0));
    let _bar = crate::progress::Following::new(
        "orders settled",
        ids.len() as u64,
        count.clone(),
        String::new,
    );
    kit::poll::retry(within, Duration::from_millis(500), || async {
        let pending: Vec<&String> = {
            let settled = settled.lock().expect("not poisoned");
            ids.iter().filter(|id| !settled.contains_key(*id)).collect()
        };
        for id in pending {
            let order = client.get(&client.order, &format!("/orders/{id}")).await?;
            if order["status"] != OrderStatus::Pending.as_str() {
                settled
                    .lock()
                    .expect("not poisoned")
                    .insert(id.clone(), order);
            }
        }
        let mut settled = settled.lock().expect("not poisoned");
        count.store(settled.len(), Ordering::SeqCst);
        if settled.len() < ids.len() {
            bail!(
                "{} orders were still PENDING after {within:?}",
                ids.len() - settled.len()
            );
        }
        Ok(ids.iter().filter_map(|id| settled.remove(id)).collect())
    })
    .await
}
