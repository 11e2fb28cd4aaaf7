//! The order saga end to end: every service running against a real Tansu broker and real
//! Postgres databases, driven over HTTP as a storefront would.

mod helpers;

use std::collections::HashSet;
use std::time::Duration;

use contract::topics;
use helpers::{
    Options, SETTLE, System, forge, metric, order_body, ready, start_coupon_service,
    start_order_service, start_product_service, timeline,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{eventually, produce_raw, read_topic};

#[tokio::test]
async fn an_order_without_coupon_is_confirmed_and_holds_its_stock() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let id = system.place_accepted_order(7, &[(mug, 2)], None).await;

    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["total_amount"], 3000);
    assert_eq!(order["discount_amount"], 0);
    assert_eq!(order["final_amount"], 3000);
    assert_eq!(
        timeline(&order),
        ["OrderCreated", "StockReserved", "OrderConfirmed"]
    );
    system.product_settles_at(mug, 8, 2).await;
    system.stop().await;
}

#[tokio::test]
async fn an_order_with_a_percent_coupon_is_confirmed_with_its_discount() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let tea = system.create_product("Tea", 999, 10).await;
    let coupon = system.create_coupon(7, "PERCENT", 10).await;
    let id = system
        .place_accepted_order(7, &[(mug, 2), (tea, 1)], Some(coupon))
        .await;

    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["total_amount"], 3999);
    assert_eq!(order["discount_amount"], 399);
    assert_eq!(order["final_amount"], 3600);
    let used = system.coupon(coupon).await;
    assert_eq!(used["status"], "USED");
    assert_eq!(used["used_by_order"], id.as_str());
    system.stop().await;
}

#[tokio::test]
async fn a_fixed_coupon_never_takes_more_than_the_total() {
    let system = System::start().await;
    let pen = system.create_product("Pen", 300, 10).await;
    let coupon = system.create_coupon(3, "FIXED", 1000).await;
    let id = system
        .place_accepted_order(3, &[(pen, 1)], Some(coupon))
        .await;
    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["discount_amount"], 300);
    assert_eq!(order["final_amount"], 0);
    system.stop().await;
}

#[tokio::test]
async fn out_of_stock_on_one_line_cancels_the_order_and_reserves_nothing() {
    let system = System::start().await;
    let plenty = system.create_product("Plenty", 100, 50).await;
    let scarce = system.create_product("Scarce", 100, 1).await;
    let id = system
        .place_accepted_order(1, &[(plenty, 5), (scarce, 2)], None)
        .await;

    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancel_reason"], "OUT_OF_STOCK");
    assert!(
        order["cancel_detail"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("product {scarce}"))
    );
    system.product_settles_at(plenty, 50, 0).await;
    system.product_settles_at(scarce, 1, 0).await;
    system.stop().await;
}

#[tokio::test]
async fn a_rejected_coupon_cancels_the_order_and_releases_the_reserved_stock() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    // The coupon belongs to user 2; user 1 tries it. The order service has never seen it,
    // so the coupon service decides, and the order is cancelled after stock was reserved.
    let coupon = system.create_coupon(2, "FIXED", 500).await;
    let id = system
        .place_accepted_order(1, &[(mug, 3)], Some(coupon))
        .await;

    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancel_reason"], "COUPON_REJECTED");
    assert!(
        order["cancel_detail"]
            .as_str()
            .unwrap_or_default()
            .contains("another user")
    );
    system.product_settles_at(mug, 10, 0).await;
    let restored = eventually("the release on the timeline", SETTLE, || async {
        let order = system.order(&id).await;
        timeline(&order)
            .contains(&"StockReleased".to_owned())
            .then_some(order)
    })
    .await;
    assert_eq!(restored["status"], "CANCELLED");
    assert_eq!(system.coupon(coupon).await["status"], "AVAILABLE");
    system.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_orders_for_ten_units_confirm_exactly_ten() {
    let system = System::start().await;
    let lamp = system.create_product("Lamp", 4000, 10).await;
    let placed = futures::future::join_all(
        (0..50).map(|user| system.place_order(user + 1, &[(lamp, 1)], None)),
    )
    .await;
    let ids: Vec<String> = placed
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            body["order_id"].as_str().expect("id").to_owned()
        })
        .collect();
    let mut confirmed = 0;
    let mut out_of_stock = 0;
    for id in &ids {
        let order = system.settled_order(id).await;
        match (order["status"].as_str(), order["cancel_reason"].as_str()) {
            (Some("CONFIRMED"), _) => confirmed += 1,
            (Some("CANCELLED"), Some("OUT_OF_STOCK")) => out_of_stock += 1,
            _ => panic!("unexpected end: {order}"),
        }
    }
    assert_eq!((confirmed, out_of_stock), (10, 40));
    system.product_settles_at(lamp, 0, 10).await;
    system.stop().await;
}

#[tokio::test]
async fn two_orders_racing_for_one_coupon_let_exactly_one_use_it() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let coupon = system.create_coupon(5, "FIXED", 500).await;
    let (a, b) = tokio::join!(
        system.place_order(5, &[(mug, 1)], Some(coupon)),
        system.place_order(5, &[(mug, 1)], Some(coupon)),
    );
    let mut winners = 0;
    for (status, body) in [a, b] {
        match status {
            StatusCode::ACCEPTED => {
                let order = system
                    .settled_order(body["order_id"].as_str().expect("id"))
                    .await;
                match order["status"].as_str() {
                    Some("CONFIRMED") => winners += 1,
                    _ => assert_eq!(order["cancel_reason"], "COUPON_REJECTED", "{order}"),
                }
            }
            // The order service saw the other order holding the coupon first.
            StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "coupon_in_use"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(winners, 1);
    // One unit stays reserved by the winner; the loser's unit, if reserved, came back.
    system.product_settles_at(mug, 9, 1).await;
    assert_eq!(system.coupon(coupon).await["status"], "USED");
    system.stop().await;
}

#[tokio::test]
async fn a_customer_cancelling_a_confirmed_order_gets_stock_and_coupon_back() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 4).await;
    let coupon = system.create_coupon(9, "PERCENT", 50).await;
    let id = system
        .place_accepted_order(9, &[(mug, 4)], Some(coupon))
        .await;
    assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");

    let (status, body) = system
        .post(system.order.url(&format!("/orders/{id}/cancel")), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(body["cancel_reason"], "USER_CANCELLED");
    system.product_settles_at(mug, 4, 0).await;
    eventually("the coupon restored", SETTLE, || async {
        (system.coupon(coupon).await["status"] == "AVAILABLE").then_some(())
    })
    .await;
    let (again, body) = system
        .post(system.order.url(&format!("/orders/{id}/cancel")), json!({}))
        .await;
    assert_eq!(again, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "order_already_cancelled");
    system.stop().await;
}

#[tokio::test]
async fn the_same_events_delivered_twice_change_nothing() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let coupon = system.create_coupon(4, "FIXED", 100).await;
    let id = system
        .place_accepted_order(4, &[(mug, 2)], Some(coupon))
        .await;
    assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");
    eventually("both order events at the data platform", SETTLE, || async {
        (system.platform_orders().await["received"] == 2).then_some(())
    })
    .await;
    let before = system.order(&id).await;

    // Publish every event of the order again, exactly as it was published the first time.
    let mut republished = 0;
    for (topic, expected) in [
        (topics::ORDER_EVENTS, 2),
        (topics::STOCK_EVENTS, 1),
        (topics::COUPON_EVENTS, 1),
    ] {
        let wanted = |r: &testkit::Received| r.key == id;
        let read = read_topic(&system.broker.brokers, topic, SETTLE, |all| {
            all.iter().filter(|r| wanted(r)).count() >= expected
        })
        .await
        .expect("read");
        for message in read.iter().filter(|r| wanted(r)) {
            let envelope = message.envelope.as_ref().expect("a contract event");
            let headers: Vec<(&str, &str)> = message
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            produce_raw(
                &system.broker.brokers,
                topic,
                &message.key,
                envelope.to_json().as_bytes(),
                &headers,
            )
            .await
            .expect("produce");
            republished += 1;
        }
    }
    assert_eq!(
        republished, 4,
        "OrderCreated, StockReserved, CouponApplied, OrderConfirmed"
    );

    // Wait until every consumer has counted each copy it was sent as a duplicate: what follows
    // then looks at the state after all of them, not at a moment that came first.
    let product = system.product.as_ref().expect("running");
    let coupon_service = system.coupon.as_ref().expect("running");
    // A confirmed order concerns neither stock nor coupons: both services ignore it, the
    // original and the copy, without a transaction, so they count no duplicate of it.
    let copies = [
        (product, topics::ORDER_EVENTS, "OrderCreated"),
        (coupon_service, topics::ORDER_EVENTS, "OrderCreated"),
        (&system.forwarder, topics::ORDER_EVENTS, "OrderCreated"),
        (&system.forwarder, topics::ORDER_EVENTS, "OrderConfirmed"),
        (&system.order, topics::STOCK_EVENTS, "StockReserved"),
        (&system.order, topics::COUPON_EVENTS, "CouponApplied"),
    ];
    eventually("every copy counted as a duplicate", SETTLE, || async {
        for (app, topic, event_type) in copies {
            let series =
                format!(r#"events_duplicate_total{{topic="{topic}",event_type="{event_type}"}}"#);
            if helpers::metric(app, &series).await < 1.0 {
                return None;
            }
        }
        let ignored = format!(
            r#"events_ignored_total{{topic="{}"}}"#,
            topics::ORDER_EVENTS
        );
        for app in [product, coupon_service] {
            if helpers::metric(app, &ignored).await < 2.0 {
                return None;
            }
        }
        Some(())
    })
    .await;
    let after = system.order(&id).await;
    assert_eq!(before, after, "the order did not change");
    system.product_settles_at(mug, 8, 2).await;
    assert_eq!(system.coupon(coupon).await["used_by_order"], id.as_str());
    let platform = system.platform_orders().await;
    assert_eq!(
        platform["received"], 2,
        "nothing new reached the data platform: {platform}"
    );
    system.stop().await;
}

#[tokio::test]
async fn an_order_committed_by_a_service_killed_before_publishing_is_published_after_restart() {
    let mut system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    // Stop the in-process order service; its database keeps the catalog.
    std::mem::replace(&mut system.order, placeholder_app().await)
        .stop()
        .await;

    // The real binary, with a broker address nobody answers: it commits orders but can never
    // publish them.
    let port = testkit::free_port();
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", &system.order_db)
            .env(
                "KAFKA_BROKERS",
                format!("127.0.0.1:{}", testkit::free_port()),
            )
            .env("RUST_LOG", "off")
            .spawn()
            .expect("order-service binary starts"),
    );
    let url = format!("http://127.0.0.1:{port}/orders");
    let (status, body) = eventually("the binary to accept orders", SETTLE, || async {
        let response = system
            .http
            .post(&url)
            .json(&order_body(1, &[(mug, 1)], None))
            .send()
            .await
            .ok()?;
        Some((response.status(), response.json::<Value>().await.ok()?))
    })
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["order_id"].as_str().expect("id").to_owned();
    let unsent: i64 = {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&system.order_db).await.expect("db");
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox_message WHERE sent_at IS NULL")
            .fetch_one(&pool)
            .await
            .expect("count")
    };
    assert_eq!(
        unsent, 1,
        "the order's event is committed and not published"
    );
    // SIGKILL: no shutdown hook, no flush.
    child.0.kill().expect("kill");
    child.0.wait().expect("reaped");

    let restarted =
        start_order_service(&system.order_db, &system.broker, &Options::default()).await;
    std::mem::replace(&mut system.order, restarted).stop().await;
    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    system.product_settles_at(mug, 9, 1).await;
    system.stop().await;
}

/// A child process killed when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An empty app standing in for a stopped service, so that [`System`] stays whole.
async fn placeholder_app() -> kit::RunningApp {
    kit::App::new(
        "placeholder",
        kit::App::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind"),
        axum::Router::new(),
        kit::health::Observed::new(kit::Metrics::new(), kit::health::Health::new()),
        &kit::http::HttpSettings::default(),
    )
    .spawn()
}

#[tokio::test]
async fn orders_confirm_while_the_data_platform_is_down_and_reach_it_once_when_it_is_back() {
    let system = System::start().await;
    system.set_platform_failure_rate(1.0).await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let mut ids = Vec::new();
    for user in 1..=3 {
        ids.push(system.place_accepted_order(user, &[(mug, 1)], None).await);
    }
    for id in &ids {
        assert_eq!(system.settled_order(id).await["status"], "CONFIRMED");
    }
    eventually("failed deliveries", SETTLE, || async {
        (system.platform_orders().await["failed"].as_i64() >= Some(3)).then_some(())
    })
    .await;
    assert_eq!(system.platform_orders().await["received"], 0);

    system.set_platform_failure_rate(0.0).await;
    let platform = eventually("every order event delivered", SETTLE, || async {
        let platform = system.platform_orders().await;
        (platform["received"] == 6).then_some(platform)
    })
    .await;
    let kept = platform["orders"].as_array().expect("orders");
    let keys: HashSet<&str> = kept
        .iter()
        .filter_map(|o| o["idempotency_key"].as_str())
        .collect();
    assert_eq!(keys.len(), 6, "each event kept once");
    for id in &ids {
        let types: Vec<&str> = kept
            .iter()
            .filter(|o| o["body"]["order_id"] == id.as_str())
            .filter_map(|o| o["body"]["event_type"].as_str())
            .collect();
        assert_eq!(types.len(), 2, "{types:?}");
        assert!(types.contains(&"OrderCreated") && types.contains(&"OrderConfirmed"));
    }
    system.stop().await;
}

#[tokio::test]
async fn with_the_product_service_down_an_order_times_out_and_its_late_reservation_is_released() {
    let mut system = System::start_with(Options {
        saga_timeout: Duration::from_millis(1_500),
        ..Options::default()
    })
    .await;
    let mug = system.create_product("Mug", 1500, 5).await;
    system.stop_product_service().await;

    let id = system.place_accepted_order(1, &[(mug, 2)], None).await;
    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["cancel_reason"], "TIMEOUT");

    // Back up, the product service handles OrderCreated (and reserves), then OrderCancelled
    // (and releases): the stock ends where it started.
    system.restart_product_service().await;
    let order = eventually("the late reservation released", SETTLE, || async {
        let order = system.order(&id).await;
        timeline(&order)
            .contains(&"StockReleased".to_owned())
            .then_some(order)
    })
    .await;
    assert_eq!(
        order["status"], "CANCELLED",
        "a late reservation never revives an order"
    );
    system.product_settles_at(mug, 5, 0).await;
    system.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_order_for_the_same_request_only() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let send = |key: &'static str, body: Value| {
        let request = system
            .http
            .post(system.order.url("/orders"))
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let response = request.send().await.expect("request");
            (
                response.status(),
                response.json::<Value>().await.expect("json"),
            )
        }
    };
    let (first, created) = send("checkout-42", order_body(1, &[(mug, 1)], None)).await;
    assert_eq!(first, StatusCode::ACCEPTED);
    let (second, replayed) = send("checkout-42", order_body(1, &[(mug, 1)], None)).await;
    assert_eq!(second, StatusCode::OK);
    assert_eq!(replayed["order_id"], created["order_id"]);
    let (other, refused) = send("checkout-42", order_body(1, &[(mug, 2)], None)).await;
    assert_eq!(other, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["code"], "idempotency_key_reused");
    let (bad, invalid) = send("has space", order_body(1, &[(mug, 1)], None)).await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);
    assert_eq!(invalid["error"]["code"], "invalid_idempotency_key");
    // Only one order was made: one unit reserved.
    system.product_settles_at(mug, 9, 1).await;
    system.stop().await;
}

#[tokio::test]
async fn the_trace_of_the_request_reaches_every_event_and_the_data_platform() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = system
        .http
        .post(system.order.url("/orders"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&order_body(1, &[(mug, 1)], None))
        .send()
        .await
        .expect("request");
    let id = response.json::<Value>().await.expect("json")["order_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");
    for topic in [topics::ORDER_EVENTS, topics::STOCK_EVENTS] {
        let read = read_topic(&system.broker.brokers, topic, SETTLE, |r| {
            r.iter().any(|m| m.key == id)
        })
        .await
        .expect("read");
        for message in read.iter().filter(|m| m.key == id) {
            let traceparent = message.header("traceparent").expect("traceparent header");
            assert!(traceparent.contains(trace_id), "{topic}: {traceparent}");
        }
    }
    let platform = eventually("deliveries", SETTLE, || async {
        let platform = system.platform_orders().await;
        (platform["received"] == 2).then_some(platform)
    })
    .await;
    for kept in platform["orders"].as_array().expect("orders") {
        assert!(
            kept["traceparent"]
                .as_str()
                .unwrap_or_default()
                .contains(trace_id),
            "{kept}"
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn bad_orders_get_a_4xx_with_a_code_and_change_nothing() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let other_users_coupon = system.create_coupon(2, "FIXED", 100).await;
    let url = system.order.url("/orders");
    let raw = |body: &'static str, content_type: &'static str| {
        let request = system
            .http
            .post(url.clone())
            .header("content-type", content_type)
            .body(body);
        async move {
            let response = request.send().await.expect("request");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let cases: Vec<(&str, (StatusCode, Value), StatusCode, &str)> = vec![
        ("malformed JSON", raw("{\"user_id\": 1,", "application/json").await, StatusCode::BAD_REQUEST, "malformed_json"),
        ("not JSON", raw("user_id=1", "application/x-www-form-urlencoded").await, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("a field of the wrong type", system.post(url.clone(), json!({"user_id": "one", "items": []})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("an unknown field", system.post(url.clone(), json!({"user_id": 1, "items": [{"product_id": mug, "quantity": 1}], "gift": true})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("a fractional quantity", system.post(url.clone(), json!({"user_id": 1, "items": [{"product_id": mug, "quantity": 1.5}]})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ("no items", system.place_order(1, &[], None).await, StatusCode::UNPROCESSABLE_ENTITY, "no_items"),
        ("too many items", system.place_order(1, &(1..=101).map(|p| (p, 1)).collect::<Vec<_>>(), None).await, StatusCode::UNPROCESSABLE_ENTITY, "too_many_items"),
        ("a zero quantity", system.place_order(1, &[(mug, 0)], None).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_quantity"),
        ("a negative quantity", system.place_order(1, &[(mug, -2)], None).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_quantity"),
        ("a huge quantity", system.place_order(1, &[(mug, 1_000_000)], None).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_quantity"),
        ("a product twice", system.place_order(1, &[(mug, 1), (mug, 1)], None).await, StatusCode::UNPROCESSABLE_ENTITY, "duplicate_product"),
        ("an unknown product", system.place_order(1, &[(mug, 1), (987_654, 1)], None).await, StatusCode::UNPROCESSABLE_ENTITY, "unknown_product"),
        ("a zero user", system.place_order(0, &[(mug, 1)], None).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_id"),
        ("a negative coupon", system.place_order(1, &[(mug, 1)], Some(-1)).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_coupon_id"),
    ];
    for (what, (status, body), expected_status, expected_code) in cases {
        assert_eq!(status, expected_status, "{what}: {body}");
        assert_eq!(body["error"]["code"], expected_code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }

    let huge = format!(
        "{{\"user_id\": 1, \"items\": [{}]}}",
        vec!["{\"product_id\": 1, \"quantity\": 1}"; 5000].join(",")
    );
    let response = system
        .http
        .post(url.clone())
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.json::<Value>().await.expect("json")["error"]["code"],
        "body_too_large"
    );

    // A coupon known to be held by a live order is refused at once.
    let holder = system
        .place_accepted_order(2, &[(mug, 1)], Some(other_users_coupon))
        .await;
    assert_eq!(system.settled_order(&holder).await["status"], "CONFIRMED");
    let (status, body) = system
        .place_order(1, &[(mug, 1)], Some(other_users_coupon))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "coupon_not_owned");
    let (status, body) = system
        .place_order(2, &[(mug, 1)], Some(other_users_coupon))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "coupon_in_use");

    for (path, code) in [
        ("/orders/not-a-uuid", "order_not_found"),
        (
            "/orders/0193a0c4-0000-7000-8000-000000000000",
            "order_not_found",
        ),
        ("/nowhere", "not_found"),
    ] {
        let (status, body) = system.get(system.order.url(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    // Only the holder's unit is reserved: no refused request reserved anything.
    system.product_settles_at(mug, 9, 1).await;
    system.stop().await;
}

#[tokio::test]
async fn bad_products_and_coupons_get_a_4xx_with_a_code() {
    let system = System::start().await;
    let product_url = system.product.as_ref().expect("running").url("/products");
    let coupon_url = system.coupon_app().url("/coupons");
    let cases = vec![
        (
            system
                .post(
                    product_url.clone(),
                    json!({"name": "", "price": 1, "stock": 1}),
                )
                .await,
            "invalid_name",
        ),
        (
            system
                .post(
                    product_url.clone(),
                    json!({"name": "a\u{0}b", "price": 1, "stock": 1}),
                )
                .await,
            "invalid_name",
        ),
        (
            system
                .post(
                    product_url.clone(),
                    json!({"name": "X", "price": -1, "stock": 1}),
                )
                .await,
            "invalid_price",
        ),
        (
            system
                .post(
                    product_url.clone(),
                    json!({"name": "X", "price": 1, "stock": -5}),
                )
                .await,
            "invalid_stock",
        ),
        (
            system
                .post(
                    product_url.clone(),
                    json!({"name": "X", "price": "1", "stock": 1}),
                )
                .await,
            "invalid_body",
        ),
        (
            system
                .post(format!("{product_url}/1/restock"), json!({"quantity": 0}))
                .await,
            "invalid_quantity",
        ),
        (
            system
                .post(
                    coupon_url.clone(),
                    json!({"user_id": 1, "kind": "BOGUS", "value": 1}),
                )
                .await,
            "invalid_body",
        ),
        (
            system
                .post(
                    coupon_url.clone(),
                    json!({"user_id": 1, "kind": "PERCENT", "value": 150}),
                )
                .await,
            "invalid_value",
        ),
        (
            system
                .post(
                    coupon_url.clone(),
                    json!({"user_id": 0, "kind": "FIXED", "value": 10}),
                )
                .await,
            "invalid_user_id",
        ),
        (
            system
                .post(
                    coupon_url.clone(),
                    json!({"user_id": 1, "kind": "FIXED", "value": 10, "expires_at": "tomorrow"}),
                )
                .await,
            "invalid_body",
        ),
    ];
    for ((status, body), code) in cases {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{code}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let (status, body) = system.get(format!("{product_url}/424242")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("product_not_found"))
    );
    let (status, body) = system.get(format!("{coupon_url}/abc")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    system.stop().await;
}

#[tokio::test]
async fn an_expired_coupon_cancels_the_order() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let (status, body) = system
        .post(
            system.coupon_app().url("/coupons"),
            json!({"user_id": 1, "kind": "FIXED", "value": 100, "expires_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["status"], "EXPIRED");
    let coupon = body["coupon_id"].as_i64().expect("id");
    let id = system
        .place_accepted_order(1, &[(mug, 1)], Some(coupon))
        .await;
    let order = system.settled_order(&id).await;
    assert_eq!(order["cancel_reason"], "COUPON_REJECTED", "{order}");
    assert!(
        order["cancel_detail"]
            .as_str()
            .unwrap_or_default()
            .contains("expired")
    );
    system.product_settles_at(mug, 10, 0).await;
    system.stop().await;
}

#[tokio::test]
async fn deliveries_that_spend_their_retry_budget_are_dead_lettered_and_delivered_once_retried() {
    let system = System::start_with(Options {
        delivery_max_attempts: 2,
        ..Options::default()
    })
    .await;
    system.set_platform_failure_rate(1.0).await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let id = system.place_accepted_order(1, &[(mug, 1)], None).await;
    assert_eq!(
        system.settled_order(&id).await["status"],
        "CONFIRMED",
        "the order path never waits"
    );

    let dlq = contract::topics::dlq_topic("analytics-forwarder");
    let letters = read_topic(&system.broker.brokers, &dlq, SETTLE, |r| r.len() >= 2)
        .await
        .expect("read");
    assert_eq!(
        letters.len(),
        2,
        "OrderCreated and OrderConfirmed, each given up once"
    );
    for letter in &letters {
        assert_eq!(letter.key, id);
        assert_eq!(letter.header("dlq.stage"), Some("deliver"));
        assert_eq!(
            letter.header("dlq.source.topic"),
            Some(topics::ORDER_EVENTS)
        );
        assert!(
            letter
                .header("dlq.error")
                .is_some_and(|e| e.contains("retry budget")),
            "{letter:?}"
        );
    }
    // The worker counts a delivery it gave up once the letter is filed and its row updated,
    // a moment after the letter shows on the topic.
    eventually("both deliveries counted as given up", SETTLE, || async {
        let metrics = system
            .http
            .get(system.forwarder.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .contains("deliveries_total{outcome=\"gave_up\"} 2")
            .then_some(())
    })
    .await;

    // The data platform is fixed; retrying the failed deliveries (twice: it is idempotent)
    // delivers each event once.
    system.set_platform_failure_rate(0.0).await;
    for _ in 0..2 {
        let (status, body) = system
            .post(system.forwarder.url("/deliveries/retry"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Once no delivery is left but delivered ones, nothing more can reach the platform:
    // only a retry puts a failed one back, and none is failed.
    sqlx::any::install_default_drivers();
    let forwarder_db = sqlx::AnyPool::connect(&system.forwarder_db)
        .await
        .expect("db");
    eventually("every delivery delivered", SETTLE, || async {
        let waiting: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM delivery WHERE status <> 'DELIVERED'")
                .fetch_one(&forwarder_db)
                .await
                .ok()?;
        (waiting == 0).then_some(())
    })
    .await;
    let platform = system.platform_orders().await;
    assert_eq!(platform["received"], 2, "{platform}");
    system.stop().await;
}

#[tokio::test]
async fn a_dead_data_platform_trips_the_circuit_breaker_instead_of_being_hammered() {
    let system = System::start().await;
    system.set_platform_failure_rate(1.0).await;
    let mug = system.create_product("Mug", 1500, 100).await;
    for user in 1..=10 {
        system.place_accepted_order(user, &[(mug, 1)], None).await;
    }
    eventually("the circuit to open", SETTLE, || async {
        let opened = helpers::metric(&system.forwarder, "data_platform_circuit_opened_total");
        (opened.await >= 1.0).then_some(())
    })
    .await;
    // Twenty events are pending; with the circuit open only probes reach the platform.
    let before = system.platform_orders().await["failed"]
        .as_i64()
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = system.platform_orders().await["failed"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        after - before <= 3,
        "at most a probe per cool-down: {before} -> {after}"
    );
    system.set_platform_failure_rate(0.0).await;
    eventually(
        "every event delivered once the platform is back",
        SETTLE,
        || async { (system.platform_orders().await["received"] == 20).then_some(()) },
    )
    .await;
    system.stop().await;
}

#[tokio::test]
async fn every_endpoint_fuzzed_from_its_openapi_document_answers_below_500_with_json_errors() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 1_000).await;
    system.create_coupon(1, "FIXED", 100).await;
    let _ = mug;
    let services = [
        ("order-service", system.order.url("")),
        (
            "product-service",
            system.product.as_ref().expect("running").url(""),
        ),
        ("coupon-service", system.coupon_app().url("")),
        ("analytics-forwarder", system.forwarder.url("")),
        ("data-platform-mock", system.platform.url("")),
    ];
    let mut total = 0;
    for (seed, (service, base)) in services.iter().enumerate() {
        let (sent, findings) = helpers::fuzz::fuzz(&system.http, base, 80, seed as u64).await;
        total += sent;
        assert!(findings.is_empty(), "{service}: {findings:#?}");
    }
    assert!(total >= 800, "{total} requests sent");
    system.stop().await;
}

#[tokio::test]
async fn every_consumer_dead_letters_garbage_ignores_unknown_types_and_keeps_going() {
    let system = System::start().await;
    let unknown = br#"{"event_id":"0193a0c4-0000-7000-8000-000000000009","event_type":"ParcelShipped","schema_version":1,"occurred_at":"2026-11-24T08:00:00Z","producer":"x","payload":{}}"#;
    let wrong_shape = br#"{"event_id":"0193a0c4-0000-7000-8000-00000000000a","event_type":"OrderCreated","schema_version":1,"occurred_at":"2026-11-24T08:00:00Z","producer":"x","payload":{"order_id":"nope"}}"#;
    for topic in [
        topics::ORDER_EVENTS,
        topics::STOCK_EVENTS,
        topics::COUPON_EVENTS,
        topics::PRODUCT_CATALOG,
    ] {
        for payload in [&b"\x00\xffgarbage"[..], b"[1,2]", wrong_shape, unknown] {
            produce_raw(&system.broker.brokers, topic, "garbage", payload, &[])
                .await
                .expect("produce");
        }
    }
    // The services keep serving: a real order still goes through the whole saga.
    let mug = system.create_product("Mug", 1500, 10).await;
    let coupon = system.create_coupon(1, "FIXED", 100).await;
    let id = system
        .place_accepted_order(1, &[(mug, 1)], Some(coupon))
        .await;
    assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");
    // Each consumer dead-lettered the garbage of each topic it reads, and nothing else.
    for (service, topics_read) in [
        ("order-service", 3),
        ("product-service", 1),
        ("coupon-service", 1),
        ("analytics-forwarder", 1),
    ] {
        let dlq = contract::topics::dlq_topic(service);
        let expected = topics_read * 3;
        let letters = read_topic(&system.broker.brokers, &dlq, SETTLE, |r| {
            r.len() >= expected
        })
        .await
        .expect("read");
        assert_eq!(letters.len(), expected, "{service}");
        assert!(
            letters
                .iter()
                .all(|l| l.key == "garbage" && l.header("dlq.stage") == Some("consume")),
            "{service}"
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn the_forwarder_waits_as_long_as_a_429_retry_after_asks() {
    let system = System::start().await;
    system
        .set_platform(json!({ "failure_rate": 1.0, "failure_status": 429, "retry_after_s": 10 }))
        .await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let id = system.place_accepted_order(1, &[(mug, 1)], None).await;
    assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");
    eventually("both events tried once", SETTLE, || async {
        (system.platform_orders().await["failed"] == 2).then_some(())
    })
    .await;
    // Without Retry-After the first retries would come within a few hundred milliseconds. The
    // wait asked for is long (10 s) so that a slow machine noticing the first failures late
    // still looks well inside it: CI once saw the third attempt with a 3 s wait.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(
        system.platform_orders().await["failed"],
        2,
        "no retry before Retry-After"
    );
    system.set_platform(json!({ "failure_rate": 0.0 })).await;
    eventually("both events delivered after the wait", SETTLE, || async {
        (system.platform_orders().await["received"] == 2).then_some(())
    })
    .await;
    system.stop().await;
}

#[tokio::test]
async fn two_replicas_of_each_service_share_the_work_and_one_stopping_hands_everything_over() {
    let system = System::start().await;
    let order2 = start_order_service(&system.order_db, &system.broker, &system.options).await;
    let product2 = start_product_service(&system.product_db, &system.broker).await;
    let coupon2 = start_coupon_service(&system.coupon_db, &system.broker).await;
    let mug = system.create_product("Mug", 100, 1_000).await;
    let pairs = [
        (&system.order, &order2),
        (system.product.as_ref().expect("product"), &product2),
        (system.coupon_app(), &coupon2),
    ];
    // The partitions of each group are spread over both replicas, and each is ready.
    let groups = [
        ("order-service", 9.0),
        ("product-service", 3.0),
        ("coupon-service", 3.0),
    ];
    eventually("the partitions spread over every pair", SETTLE, || async {
        for ((a, b), (group, partitions)) in pairs.iter().zip(groups) {
            let series = format!("consumer_partitions{{consumer=\"{group}\"}}");
            let held = [metric(a, &series).await, metric(b, &series).await];
            if held.contains(&0.0) || held[0] + held[1] != partitions {
                return None;
            }
            if !(ready(a).await && ready(b).await) {
                return None;
            }
        }
        Some(())
    })
    .await;

    // Orders through both order replicas, half of them with a coupon.
    let mut placed = Vec::new();
    for n in 0..20i64 {
        let coupon = if n % 2 == 0 {
            Some(system.create_coupon(100 + n, "FIXED", 10).await)
        } else {
            None
        };
        let via = if n % 2 == 0 { &system.order } else { &order2 };
        let (status, body) = system
            .post(via.url("/orders"), order_body(100 + n, &[(mug, 1)], coupon))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        placed.push(body["order_id"].as_str().expect("id").to_owned());
    }
    for id in &placed {
        let order = system.settled_order(id).await;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
    }
    // One relay per service publishes: of each pair, exactly one has published anything.
    for (a, b) in pairs {
        let published = [
            metric(a, "outbox_published_total").await,
            metric(b, "outbox_published_total").await,
        ];
        assert_eq!(
            published.iter().filter(|n| **n > 0.0).count(),
            1,
            "one relay publishes: {published:?}"
        );
    }

    // The first replica of each service stops cleanly; the second takes over its partitions
    // and its relay lease at once.
    let System {
        broker,
        order,
        product,
        coupon,
        forwarder,
        platform,
        http,
        ..
    } = system;
    order.stop().await;
    product.expect("product").stop().await;
    coupon.expect("coupon").stop().await;
    let mut later = Vec::new();
    for n in 0..10i64 {
        let (status, body) = post(
            &http,
            order2.url("/orders"),
            order_body(200 + n, &[(mug, 1)], None),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        later.push(body["order_id"].as_str().expect("id").to_owned());
    }
    for id in &later {
        let order = eventually(
            "the order confirmed by the remaining replicas",
            SETTLE,
            || async {
                let (_, order) = get(&http, order2.url(&format!("/orders/{id}"))).await;
                (order["status"] != "PENDING").then_some(order)
            },
        )
        .await;
        assert_eq!(order["status"], "CONFIRMED");
    }
    // Nothing was applied twice: 30 units are held, and each coupon by its one order.
    let (_, product) = get(&http, product2.url(&format!("/products/{mug}"))).await;
    assert_eq!(
        (product["available"].as_i64(), product["reserved"].as_i64()),
        (Some(970), Some(30))
    );
    for (n, id) in placed.iter().enumerate().filter(|(n, _)| n % 2 == 0) {
        let (_, order) = get(&http, order2.url(&format!("/orders/{id}"))).await;
        let coupon_id = order["coupon_id"].as_i64().expect("coupon");
        let (_, coupon) = get(&http, coupon2.url(&format!("/coupons/{coupon_id}"))).await;
        assert_eq!(coupon["used_by_order"], json!(id), "order {n}");
    }
    for app in [order2, product2, coupon2, forwarder, platform] {
        app.stop().await;
    }
    drop(broker);
}

async fn post(
    http: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let response = http.post(url).json(&body).send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

async fn get(http: &reqwest::Client, url: String) -> (StatusCode, serde_json::Value) {
    let response = http.get(url).send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn operator_endpoints_answer_401_without_the_admin_token_and_change_nothing() {
    let system = System::start().await;
    let product_url = system.product.as_ref().expect("running").url("");
    let stranger = reqwest::Client::new();
    let mug = system.create_product("Mug", 1500, 5).await;
    let before = system.product(mug).await;
    for (method, url, body) in [
        (
            reqwest::Method::POST,
            format!("{product_url}/products/{mug}/restock"),
            json!({ "quantity": 1000 }),
        ),
        // A product at price 0 with a billion units, or a 100 % coupon for anyone: the
        // catalog is the operator's.
        (
            reqwest::Method::POST,
            format!("{product_url}/products"),
            json!({ "name": "Free", "price": 0, "stock": 1_000_000_000 }),
        ),
        (
            reqwest::Method::POST,
            system.coupon_app().url("/coupons"),
            json!({ "user_id": 1, "kind": "PERCENT", "value": 100 }),
        ),
        (
            reqwest::Method::POST,
            system.forwarder.url("/deliveries/retry"),
            json!({}),
        ),
        (
            reqwest::Method::PUT,
            system.platform.url("/v1/settings"),
            json!({ "failure_rate": 1.0 }),
        ),
    ] {
        for token in [None, Some("not-the-admin-token-at-all")] {
            let mut request = stranger.request(method.clone(), &url).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("an answer");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {url}"
            );
            let error: Value = response.json().await.expect("a JSON error");
            assert_eq!(error["error"]["code"], "unauthorized", "{method} {url}");
        }
    }
    assert_eq!(system.product(mug).await, before, "the stock is as it was");
    let (status, _) = system
        .get(format!("{product_url}/products/{}", mug + 1))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no product was created");
    let (status, _) = system.get(system.coupon_app().url("/coupons/1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no coupon was created");
    let settings: Value = system.get(system.platform.url("/v1/settings")).await.1;
    assert_eq!(settings["failure_rate"], 0.0, "the data platform stays on");
}

#[tokio::test]
async fn a_forged_coupon_or_reservation_is_dead_lettered_and_the_order_is_unchanged() {
    let mut system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let coupon = system.create_coupon(1, "PERCENT", 10).await;
    // The product service is down, so the order waits PENDING for its stock while its real
    // coupon (10 % of 3000) is applied: the moment a forged "whole amount off" would pay.
    system.stop_product_service().await;
    let id = system
        .place_accepted_order(1, &[(mug, 2)], Some(coupon))
        .await;
    let order_id: uuid::Uuid = id.parse().expect("a UUID");
    eventually("the real coupon applied", SETTLE, || async {
        (system.order(&id).await["discount_amount"] == 300).then_some(())
    })
    .await;

    let forgeries: [contract::Event; 4] = [
        // The whole amount off, claimed for the order's own coupon.
        contract::CouponApplied {
            order_id,
            coupon_id: coupon,
            discount_amount: 3000,
            coupon_kind: contract::CouponKind::Percent,
            coupon_value: 10,
        }
        .into(),
        // Another coupon, consistent with itself.
        contract::CouponApplied {
            order_id,
            coupon_id: coupon + 1,
            discount_amount: 3000,
            coupon_kind: contract::CouponKind::Percent,
            coupon_value: 100,
        }
        .into(),
        // A reservation of less than the order.
        contract::StockReserved {
            order_id,
            items: vec![contract::StockLine {
                product_id: mug,
                quantity: 1,
            }],
        }
        .into(),
        // A reservation of another product.
        contract::StockReserved {
            order_id,
            items: vec![contract::StockLine {
                product_id: mug + 1,
                quantity: 2,
            }],
        }
        .into(),
    ];
    for event in forgeries {
        let (topic, producer) = match event {
            contract::Event::CouponApplied(_) => (topics::COUPON_EVENTS, "coupon-service"),
            _ => (topics::STOCK_EVENTS, "product-service"),
        };
        forge(&system, topic, producer, event).await;
    }
    let letters = read_topic(
        &system.broker.brokers,
        &contract::topics::dlq_topic("order-service"),
        SETTLE,
        |r| r.len() >= 4,
    )
    .await
    .expect("read");
    assert_eq!(letters.len(), 4, "every forgery is dead-lettered");
    let reasons: Vec<&str> = letters
        .iter()
        .filter_map(|l| l.header("dlq.error"))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("takes 300 off")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("carries coupon")),
        "{reasons:?}"
    );
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("the order's lines are"))
            .count(),
        2,
        "{reasons:?}"
    );

    // Still PENDING with the real discount; the real reservation then confirms it.
    let order = system.order(&id).await;
    assert_eq!(order["status"], "PENDING", "{order}");
    assert_eq!(order["discount_amount"], 300, "{order}");
    system.restart_product_service().await;
    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["final_amount"], 2700, "{order}");
    system.stop().await;
}

#[tokio::test]
async fn a_flood_of_metrics_and_readiness_requests_never_keeps_an_order_from_being_placed() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 100, 1_000).await;
    let http = reqwest::Client::new();
    let flood = futures::future::join_all((0..400).map(|n| {
        let http = http.clone();
        let path = if n % 2 == 0 {
            "/metrics"
        } else {
            "/health/ready"
        };
        let url = system.order.url(path);
        async move { http.get(&url).send().await.ok().map(|r| r.status()) }
    }));
    // Orders placed beside it are each accepted at the first try: the health and metrics
    // routes are shed on their own and answer from one look at the database a second.
    let beside = async {
        let mut ids = Vec::new();
        for user in 1..=5 {
            let (status, body) = system
                .post(
                    system.order.url("/orders"),
                    json!({ "user_id": user, "items": [{ "product_id": mug, "quantity": 1 }] }),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            ids.push(body["order_id"].as_str().expect("an id").to_owned());
        }
        ids
    };
    let (answers, ids) = tokio::join!(flood, beside);
    let answers: Vec<StatusCode> = answers.into_iter().flatten().collect();
    assert!(
        answers
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{answers:?}"
    );
    for id in ids {
        assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");
    }
    system.stop().await;
}

#[tokio::test]
async fn a_flood_is_shed_with_503_while_orders_placed_beside_it_still_confirm() {
    let system = System::start_with(Options {
        order_max_concurrent_requests: 4,
        ..Options::default()
    })
    .await;
    let mug = system.create_product("Mug", 100, 1_000_000).await;
    let flood_client = reqwest::Client::new();
    let flood = |round: u32| {
        let http = flood_client.clone();
        let url = system.order.url("/orders");
        async move {
            let requests = (0..300).map(|n| {
                let http = http.clone();
                let url = url.clone();
                async move {
                    // Full orders, each a transaction: the kind of flood that costs.
                    let body = json!({ "user_id": 1000 + round * 1000 + n, "items": [{ "product_id": mug, "quantity": 1 }] });
                    let response = http.post(&url).json(&body).send().await.ok()?;
                    let retry_after = response.headers().get("retry-after").cloned();
                    let status = response.status();
                    let code = response.json::<Value>().await.ok()?["error"]["code"].clone();
                    Some((status, retry_after, code))
                }
            });
            futures::future::join_all(requests).await
        }
    };
    // Orders placed beside the flood, by a client that waits as `Retry-After` asks.
    let beside = async {
        let mut ids = Vec::new();
        for user in 1..=5 {
            let id = loop {
                let (status, body) = system
                    .post(
                        system.order.url("/orders"),
                        json!({ "user_id": user, "items": [{ "product_id": mug, "quantity": 1 }] }),
                    )
                    .await;
                if status == StatusCode::ACCEPTED {
                    break body["order_id"].as_str().expect("an id").to_owned();
                }
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            ids.push(id);
        }
        ids
    };
    let mut shed = Vec::new();
    let mut round = 0;
    let (ids, ()) = tokio::join!(beside, async {
        while shed.is_empty() && round < 10 {
            shed = flood(round)
                .await
                .into_iter()
                .flatten()
                .filter(|(status, _, _)| *status == StatusCode::SERVICE_UNAVAILABLE)
                .collect();
            round += 1;
        }
    });
    assert!(
        !shed.is_empty(),
        "a flood of 300 at once over a cap of 4 is shed"
    );
    for (_, retry_after, code) in &shed {
        assert_eq!(code, "overloaded");
        assert_eq!(
            retry_after.as_ref().and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
    for id in ids {
        assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");
    }
    // Health stays answerable whatever the API's load: readiness is never shed with the
    // API's requests. Right after a flood a part may still say it is catching up (a broker
    // check timing out on a loaded machine, say), so the service must come back to ready.
    let response = reqwest::get(system.order.url("/health/ready"))
        .await
        .expect("readiness answers");
    let status = response.status();
    let body: Value = response.json().await.expect("readiness answers JSON");
    assert!(
        matches!(body["status"].as_str(), Some("ready" | "not_ready")),
        "readiness answers with its own document, not the API's shedding: {status} {body}"
    );
    eventually(
        "the order service ready after the flood",
        SETTLE,
        || async { helpers::ready(&system.order).await.then_some(()) },
    )
    .await;
    system.stop().await;
}
