//! Liveness under the faults that used to stall the saga quietly, on the local stack as
//! `shopctl up` runs it (Tansu on SQLite storage, every service a process on its own SQLite
//! file): after each fault, a new order must confirm within 30 s, with no help from anyone.

use std::time::{Duration, Instant};

use local::start_stack;
use serde_json::{Value, json};
use shopctl::stack::{Service, Stack};

mod local;

/// How long a new order may take to confirm once the fault is over.
const CONFIRM_WITHIN: Duration = Duration::from_secs(30);

/// `POST`s as the operator of `stack`: the tests create products and coupons.
async fn post(stack: &Stack, url: String, body: Value) -> Value {
    let response = testkit::operator_client_with(stack.admin_token())
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert!(
        response.status().is_success(),
        "POST {url}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

/// A product with plenty of stock, known to the order service's catalog.
async fn product(stack: &Stack) -> i64 {
    let created = post(
        stack,
        format!("{}/products", stack.url(Service::ProductService)),
        json!({ "name": "Lamp", "price": 1000, "stock": 1000 }),
    )
    .await;
    let id = created["product_id"].as_i64().expect("id");
    shopctl::api::wait_for_catalog(&stack.url(Service::OrderService), id)
        .await
        .expect("the product reaches the catalog");
    id
}

/// POSTs `body` to `url` until a service answers with success (it may be restarting), within
/// what is left of the budget that began at `started`; returns the JSON answer.
async fn post_until_accepted(
    http: &reqwest::Client,
    started: Instant,
    url: &str,
    key: &str,
    body: &Value,
) -> Result<Value, String> {
    kit::poll::until(
        &format!("an answer to POST {url}"),
        CONFIRM_WITHIN.saturating_sub(started.elapsed()),
        Duration::from_millis(200),
        || async {
            let response = http
                .post(url)
                .timeout(Duration::from_secs(5))
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .await
                .ok()?;
            if !response.status().is_success() {
                return None;
            }
            response.json::<Value>().await.ok()
        },
    )
    .await
    .map_err(|timed_out| timed_out.to_string())
}

/// Places an order (retrying while the order service comes back) with a coupon of the user's
/// own, and returns how long it took from the first try to CONFIRMED, or the status it was
/// left in after [`CONFIRM_WITHIN`].
async fn order_confirms(stack: &Stack, product_id: i64) -> Result<Duration, String> {
    let started = Instant::now();
    let http = testkit::operator_client_with(stack.admin_token());
    let coupon = post_until_accepted(
        &http,
        started,
        &format!("{}/coupons", stack.url(Service::CouponService)),
        &uuid::Uuid::new_v4().to_string(),
        &json!({ "user_id": 9, "kind": "FIXED", "value": 100 }),
    )
    .await?;
    let coupon = coupon["coupon_id"].as_i64().expect("coupon id");
    let body = json!({ "user_id": 9, "items": [{ "product_id": product_id, "quantity": 1 }], "coupon_id": coupon });
    let order = post_until_accepted(
        &http,
        started,
        &format!("{}/orders", stack.url(Service::OrderService)),
        &uuid::Uuid::new_v4().to_string(),
        &body,
    )
    .await?;
    let id = order["order_id"].as_str().expect("id");
    let url = format!("{}/orders/{id}", stack.url(Service::OrderService));
    let read = || async {
        let response = http.get(&url).send().await.ok()?;
        response.json::<Value>().await.ok()
    };
    let confirmed = kit::poll::until(
        "the order confirmed",
        CONFIRM_WITHIN.saturating_sub(started.elapsed()),
        Duration::from_millis(100),
        || async { read().await.filter(|order| order["status"] == "CONFIRMED") },
    )
    .await;
    match confirmed {
        Ok(_) => Ok(started.elapsed()),
        Err(_) => Err(format!(
            "after {CONFIRM_WITHIN:?} the order is {}",
            read().await.unwrap_or_default()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_and_restarted_five_times_in_a_row_confirms_new_orders_within_30_s() {
    let mut stack = start_stack("kill5").await;
    let product_id = product(&stack).await;
    order_confirms(&stack, product_id)
        .await
        .expect("an order confirms before any fault");
    for service in [
        Service::OrderService,
        Service::ProductService,
        Service::CouponService,
    ] {
        for _ in 0..5 {
            stack.kill_service(service);
            stack
                .start_service(service)
                .await
                .unwrap_or_else(|e| panic!("{service} comes back: {e:#}"));
        }
        let took = order_confirms(&stack, product_id)
            .await
            .unwrap_or_else(|e| panic!("after five kills of {service}: {e}"));
        println!("after five kills of {service}: an order confirmed in {took:?}");
    }
    stack.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_broker_is_killed_and_back_a_minute_later_new_orders_confirm_within_30_s() {
    let mut stack = start_stack("broker").await;
    let product_id = product(&stack).await;
    order_confirms(&stack, product_id)
        .await
        .expect("an order confirms before any fault");
    stack.kill_broker();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // A service told to stop while the broker is away stops within 10 s.
    let took = stack
        .stop_service(Service::CouponService, Duration::from_secs(10))
        .await
        .expect("SIGTERM stops a service within 10 s while the broker is down");
    println!("with the broker down, the coupon service stopped in {took:?} after SIGTERM");
    tokio::time::sleep(Duration::from_secs(50)).await;
    stack.start_broker().await.expect("the broker starts again");
    stack
        .start_service(Service::CouponService)
        .await
        .expect("the coupon service starts again");
    // As `shopctl up` does: a broker whose storage fails is restarted with every service.
    let took = {
        let mut confirmed = Box::pin(order_confirms(&stack, product_id));
        loop {
            tokio::select! {
                result = &mut confirmed => break result,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    assert!(!stack.broker_crashed(), "Tansu's storage failed after its restart; see its log");
                }
            }
        }
    }
    .unwrap_or_else(|e| panic!("after the broker came back: {e}"));
    println!("after the broker came back: an order confirmed in {took:?}");
    stack.stop(Duration::from_secs(10)).await;
}
