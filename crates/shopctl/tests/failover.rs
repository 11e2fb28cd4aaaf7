//! Fail-over on a crash, on Apache Kafka, as production relies on it: two replicas each of
//! the order, product and coupon services (processes, on Postgres, in one consumer group per
//! service); while orders flow, one replica of each is SIGKILLed. Kafka evicts a dead member
//! after `session.timeout.ms` and gives its partitions to the survivor; its relay lease runs
//! out and the survivor publishes what it left in the outbox. Tansu never evicts a SIGKILLed
//! member of a group with other live members, so this test always runs on Kafka.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use local::TestStack;
use serde_json::{Value, json};
use shopctl::stack::{BrokerKind, Service, StackConfig};

mod local;

/// The session timeout the services run with: Kafka's smallest by default.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// What a move of partitions may take beyond the session timeout: one rebalance of the group,
/// whose members rejoin within a heartbeat or two.
const REBALANCE: Duration = Duration::from_secs(30);
/// Orders placed in all, one every [`ORDER_EVERY`]; the kill comes after a third of them.
const ORDERS: usize = 150;
const ORDER_EVERY: Duration = Duration::from_millis(100);
const STOCK: i64 = 10_000;

/// The three services that run twice, with the partitions their group holds in all.
const PAIRS: [(Service, f64); 3] = [
    (Service::OrderService, 9.0),
    (Service::ProductService, 3.0),
    (Service::CouponService, 3.0),
];

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A series of a service's `/metrics`, or 0 when it is not there.
async fn metric(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let Ok(response) = http.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn partitions(http: &reqwest::Client, base: &str, service: Service) -> f64 {
    metric(
        http,
        base,
        &format!("consumer_partitions{{consumer=\"{}\"}}", service.name()),
    )
    .await
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let response = http.post(&url).json(&body).send().await.expect("POST");
    assert!(
        response.status().is_success(),
        "POST {url}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

struct Replicas {
    /// The stack's replica's port and the extra replica's, with its process.
    pairs: Vec<(Service, u16, u16, Child)>,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for (_, _, _, child) in &mut self.pairs {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_replica_of_each_service_hands_its_partitions_to_the_survivor_and_nothing_is_lost_or_applied_twice()
 {
    let shopctl = Path::new(env!("CARGO_BIN_EXE_shopctl"));
    let databases = shopctl::stack::postgres_databases(
        &testkit::admin_database_url(),
        &format!("failover_{}", uuid::Uuid::new_v4().simple()),
    )
    .await
    .expect("databases on the test run's Postgres");
    let base = testkit::free_port_run(11);
    let mut stack = TestStack::start(StackConfig {
        data_dir: local::fresh_folder("failover"),
        broker_port: testkit::free_port_run(2),
        http_port_base: base,
        build: true,
        bin_dir: shopctl.parent().map(Path::to_path_buf),
        broker: BrokerKind::Kafka,
        broker_storage: Default::default(),
        database_urls: databases,
        env: [
            ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
            ("KAFKA_HEARTBEAT_INTERVAL_MS", "1000"),
            ("RUST_LOG", "info"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
    })
    .await;
    // The test creates products and coupons, an operator's acts.
    let http = testkit::operator_client_with(stack.admin_token());

    // A second replica of each; both take part of each group's partitions.
    let mut replicas = Replicas { pairs: Vec::new() };
    for (service, _) in PAIRS {
        let port = testkit::free_port();
        let child = stack
            .start_replica(service, port)
            .await
            .expect("the replica starts");
        replicas
            .pairs
            .push((service, base + service.port_offset(), port, child));
    }
    testkit::eventually(
        "the partitions spread over every pair",
        Duration::from_secs(60),
        || async {
            for ((service, first, second, _), (_, total)) in replicas.pairs.iter().zip(PAIRS) {
                let held = [
                    partitions(&http, &url(*first), *service).await,
                    partitions(&http, &url(*second), *service).await,
                ];
                if held.contains(&0.0) || held[0] + held[1] != total {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    let product = post(
        &http,
        format!(
            "{}/products",
            url(base + Service::ProductService.port_offset())
        ),
        json!({ "name": "Lamp", "price": 1000, "stock": STOCK }),
    )
    .await["product_id"]
        .as_i64()
        .expect("a product id");
    let mut coupons = Vec::new();
    for n in 0..ORDERS / 2 {
        let coupon = post(
            &http,
            format!(
                "{}/coupons",
                url(base + Service::CouponService.port_offset())
            ),
            json!({ "user_id": 1000 + n, "kind": "FIXED", "value": 100 }),
        )
        .await;
        coupons.push(coupon["coupon_id"].as_i64().expect("a coupon id"));
    }
    let survivor_order = url(replicas.pairs[0].2);
    shopctl::api::wait_for_catalog(&survivor_order, product)
        .await
        .expect("the product reaches the catalog");

    // The survivors' readiness, watched from before the kill until every order has ended.
    let watching = Arc::new(AtomicBool::new(true));
    let survivors: Vec<(Service, String)> = replicas
        .pairs
        .iter()
        .map(|(service, _, second, _)| (*service, url(*second)))
        .collect();
    let watcher = tokio::spawn({
        let watching = watching.clone();
        let survivors = survivors.clone();
        let http = http.clone();
        async move {
            let mut not_ready = Vec::new();
            while watching.load(Ordering::Relaxed) {
                for (service, base) in &survivors {
                    let status = http
                        .get(format!("{base}/health/ready"))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    if !matches!(status, Ok(200)) {
                        not_ready.push(format!("{service}: {status:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            not_ready
        }
    });

    // Orders at a steady pace, a third before the kill and the rest after, every other one
    // with a coupon of its own; before the kill they go to both order replicas.
    let first_order = url(base + Service::OrderService.port_offset());
    let mut placed: Vec<(String, Option<i64>)> = Vec::new();
    let mut moved = Vec::new();
    let mut killed_at = None;
    for n in 0..ORDERS {
        if n == ORDERS / 3 {
            for (service, _) in PAIRS {
                stack.kill_service(service);
            }
            killed_at = Some(Instant::now());
        }
        let coupon = (n % 2 == 0).then(|| coupons[n / 2]);
        let via = if killed_at.is_none() && n % 2 == 1 {
            &first_order
        } else {
            &survivor_order
        };
        let body = json!({
            "user_id": 1000 + n / 2,
            "items": [{ "product_id": product, "quantity": 1 }],
            "coupon_id": coupon,
        });
        let answer = post(&http, format!("{via}/orders"), body).await;
        placed.push((
            answer["order_id"].as_str().expect("an id").to_owned(),
            coupon,
        ));
        // How long each survivor took to hold every partition of its group.
        if let Some(killed) = killed_at {
            for ((service, base), (_, total)) in survivors.iter().zip(PAIRS) {
                if !moved.iter().any(|(s, _)| s == service)
                    && partitions(&http, base, *service).await == total
                {
                    moved.push((*service, killed.elapsed()));
                }
            }
        }
        tokio::time::sleep(ORDER_EVERY).await;
    }
    let killed = killed_at.expect("the replicas were killed");
    for ((service, base), (_, total)) in survivors.iter().zip(PAIRS) {
        if moved.iter().any(|(s, _)| s == service) {
            continue;
        }
        testkit::eventually(
            &format!("{service}'s partitions on the survivor"),
            SESSION_TIMEOUT + REBALANCE,
            || async { (partitions(&http, base, *service).await == total).then_some(()) },
        )
        .await;
        moved.push((*service, killed.elapsed()));
    }

    // Every order ends, and confirms: stock is plentiful and each coupon has one order.
    let mut statuses = Vec::new();
    for (id, _) in &placed {
        let order = shopctl::api::wait_for_end(&survivor_order, id, Duration::from_secs(120))
            .await
            .expect("the order ends");
        statuses.push((
            id.clone(),
            order["status"].clone(),
            order["cancel_reason"].clone(),
        ));
    }
    watching.store(false, Ordering::Relaxed);
    let not_ready = watcher.await.expect("the readiness watcher");

    println!("fail-over on SIGKILL (session timeout {SESSION_TIMEOUT:?}):");
    for (service, took) in &moved {
        println!("    {service}: every partition on the survivor {took:.1?} after the kill");
    }
    let confirmed = statuses.iter().filter(|(_, s, _)| s == "CONFIRMED").count();
    println!("    orders: {} placed, {confirmed} confirmed", placed.len());

    for (service, took) in &moved {
        assert!(
            *took <= SESSION_TIMEOUT + REBALANCE,
            "{service}'s partitions moved in {took:?}"
        );
    }
    let not_confirmed: Vec<_> = statuses
        .iter()
        .filter(|(_, s, _)| s != "CONFIRMED")
        .collect();
    assert!(
        not_confirmed.is_empty(),
        "orders that did not confirm: {not_confirmed:?}"
    );
    assert!(
        not_ready.is_empty(),
        "the survivors stayed ready: {not_ready:?}"
    );

    // Nothing applied twice: exactly one unit per order is held, and each coupon is used by
    // its own order.
    let survivor_product = &survivors[1].1;
    let stock = get(&http, format!("{survivor_product}/products/{product}")).await;
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(STOCK - ORDERS as i64), Some(ORDERS as i64)),
        "{stock}"
    );
    let survivor_coupon = &survivors[2].1;
    for (id, coupon) in &placed {
        if let Some(coupon) = coupon {
            let coupon = get(&http, format!("{survivor_coupon}/coupons/{coupon}")).await;
            assert_eq!(coupon["used_by_order"], json!(id), "{coupon}");
        }
    }
    // The data platform gets each order event once: OrderCreated and OrderConfirmed of
    // every order, and no delivery twice.
    let platform = stack.url(Service::DataPlatformMock);
    let received =
        testkit::eventually("every event delivered", Duration::from_secs(60), || async {
            let listing = get(&http, format!("{platform}/v1/orders")).await;
            (listing["received"].as_u64() >= Some(2 * ORDERS as u64)).then_some(listing)
        })
        .await;
    let kept: BTreeSet<&str> = received["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter_map(|kept| kept["idempotency_key"].as_str())
        .collect();
    assert_eq!(received["received"], json!(2 * ORDERS), "{received}");
    assert_eq!(kept.len(), 2 * ORDERS, "each event kept once");
    assert_eq!(received["duplicates"], json!(0), "no event delivered twice");
    drop(replicas);
    stack.stop(Duration::from_secs(10)).await;
}
