//! Provenance, end to end: events written where they do not belong, as a leaked credential
//! (or a misrouting bug) would write them straight to the broker, are dead-lettered by the
//! consumer and change nothing; the real answers, once they come, still settle the order.

mod helpers;

use contract::topics;
use helpers::{SETTLE, System, forge, metric, timeline};
use testkit::{Received, eventually, read_topic};

/// The dead letters of `service` once there are at least `count` of them.
async fn dead_letters(system: &System, service: &str, count: usize) -> Vec<Received> {
    let letters = read_topic(
        &system.broker.brokers,
        &topics::dlq_topic(service),
        SETTLE,
        |r| r.len() >= count,
    )
    .await
    .expect("read the dead-letter topic");
    assert_eq!(letters.len(), count, "{letters:?}");
    letters
}

fn reason(letter: &Received) -> &str {
    letter.header("dlq.error").unwrap_or_default()
}

/// A product, and an order of two of it left PENDING with the product service down, so that
/// nothing but a forgery can answer for its stock: the product, the order's id as the API
/// gives it, and as a UUID.
async fn order_waiting_for_stock(system: &mut System) -> (i64, String, uuid::Uuid) {
    let mug = system.create_product("Mug", 1500, 10).await;
    system.stop_product_service().await;
    let id = system.place_accepted_order(1, &[(mug, 2)], None).await;
    let order_id = id.parse().expect("a UUID");
    (mug, id, order_id)
}

/// A reservation of exactly that order's lines, as the product service would write it.
fn reservation(order_id: uuid::Uuid, mug: i64) -> contract::StockReserved {
    contract::StockReserved {
        order_id,
        items: vec![contract::StockLine {
            product_id: mug,
            quantity: 2,
        }],
    }
}

fn dead_lettered(consumer: &str, reason: &str) -> String {
    format!("events_dead_lettered_total{{consumer=\"{consumer}\",reason=\"{reason}\"}}")
}

#[tokio::test]
async fn a_reservation_written_to_the_coupon_topic_never_confirms_an_order() {
    let mut system = System::start().await;
    let (mug, id, order_id) = order_waiting_for_stock(&mut system).await;

    // The coupon service's credential may write coupon.events; it speaks for stock there.
    let reserved = reservation(order_id, mug);
    forge(&system, topics::COUPON_EVENTS, "coupon-service", reserved).await;

    let letters = dead_letters(&system, "order-service", 1).await;
    assert_eq!(
        reason(&letters[0]),
        "a StockReserved arrived on coupon.events, but it belongs on stock.events"
    );
    assert_eq!(letters[0].header("dlq.source.topic"), Some("coupon.events"));
    assert_eq!(
        metric(
            &system.order,
            &dead_lettered("order-service", "wrong_topic")
        )
        .await,
        1.0
    );
    let order = system.order(&id).await;
    assert_eq!(order["status"], "PENDING", "{order}");
    assert!(!timeline(&order).contains(&"StockReserved".to_owned()));

    // The real reservation confirms it.
    system.restart_product_service().await;
    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    system.stop().await;
}

#[tokio::test]
async fn a_coupon_written_to_the_stock_topic_never_applies_its_discount() {
    let mut system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let coupon = system.create_coupon(1, "FIXED", 100).await;
    system.stop_coupon_service().await;
    let id = system
        .place_accepted_order(1, &[(mug, 2)], Some(coupon))
        .await;
    let order_id: uuid::Uuid = id.parse().expect("a UUID");
    eventually("the stock reserved", SETTLE, || async {
        timeline(&system.order(&id).await)
            .contains(&"StockReserved".to_owned())
            .then_some(())
    })
    .await;

    // A discount consistent with the order's own coupon, in the product service's name, on
    // the product service's topic: the one check that could catch it is where it came from.
    let applied = contract::CouponApplied {
        order_id,
        coupon_id: coupon,
        discount_amount: 100,
        coupon_kind: contract::CouponKind::Fixed,
        coupon_value: 100,
    };
    forge(&system, topics::STOCK_EVENTS, "product-service", applied).await;

    let letters = dead_letters(&system, "order-service", 1).await;
    assert_eq!(
        reason(&letters[0]),
        "a CouponApplied arrived on stock.events, but it belongs on coupon.events"
    );
    let order = system.order(&id).await;
    assert_eq!(order["status"], "PENDING", "{order}");
    assert_eq!(order["discount_amount"], 0, "{order}");

    system.restart_coupon_service().await;
    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["final_amount"], 2900, "{order}");
    system.stop().await;
}

#[tokio::test]
async fn a_price_written_to_the_coupon_topic_never_reprices_the_catalog() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let free = contract::ProductUpserted {
        product_id: mug,
        name: "Mug".into(),
        price: 0,
    };
    forge(&system, topics::COUPON_EVENTS, "coupon-service", free).await;

    let letters = dead_letters(&system, "order-service", 1).await;
    assert_eq!(
        reason(&letters[0]),
        "a ProductUpserted arrived on coupon.events, but it belongs on product.catalog"
    );
    let (_, product) = system
        .get(system.order.url(&format!("/catalog/{mug}")))
        .await;
    assert_eq!(product["price"], 1500, "{product}");
    let id = system.place_accepted_order(1, &[(mug, 2)], None).await;
    let order = system.settled_order(&id).await;
    assert_eq!(order["final_amount"], 3000, "{order}");
    system.stop().await;
}

#[tokio::test]
async fn an_event_claiming_another_producer_than_its_topics_changes_nothing() {
    let mut system = System::start().await;
    let (mug, id, order_id) = order_waiting_for_stock(&mut system).await;

    // On the right topic, but in the coupon service's name.
    let reserved = reservation(order_id, mug);
    forge(&system, topics::STOCK_EVENTS, "coupon-service", reserved).await;
    let letters = dead_letters(&system, "order-service", 1).await;
    assert_eq!(
        reason(&letters[0]),
        "stock.events is produced by product-service alone, but this StockReserved claims coupon-service"
    );
    assert_eq!(
        metric(
            &system.order,
            &dead_lettered("order-service", "wrong_producer")
        )
        .await,
        1.0
    );
    assert_eq!(system.order(&id).await["status"], "PENDING");

    // The product service refuses an order that is not the order service's in the same way,
    // and reserves nothing for it.
    system.restart_product_service().await;
    let order = system.settled_order(&id).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let before = system.product(mug).await;
    let created = contract::OrderCreated {
        order_id: uuid::Uuid::now_v7(),
        user_id: 1,
        items: vec![contract::OrderLine {
            product_id: mug,
            quantity: 5,
            unit_price: 1500,
        }],
        total_amount: 7500,
        coupon_id: None,
        created_at: chrono::Utc::now(),
    };
    forge(&system, topics::ORDER_EVENTS, "coupon-service", created).await;
    let letters = dead_letters(&system, "product-service", 1).await;
    assert!(
        reason(&letters[0]).contains("order.events is produced by order-service alone"),
        "{letters:?}"
    );
    assert_eq!(system.product(mug).await, before, "nothing reserved");
    system.stop().await;
}

#[tokio::test]
async fn a_coupon_refusal_for_an_order_without_that_coupon_never_cancels_it() {
    let mut system = System::start().await;
    let (_, id, order_id) = order_waiting_for_stock(&mut system).await;

    // From the right producer on the right topic, but about a coupon the order never had.
    let refused = contract::CouponApplyFailed {
        order_id,
        coupon_id: 4,
        reason: contract::CouponRejection::NotFound,
        detail: "no such coupon".into(),
    };
    forge(&system, topics::COUPON_EVENTS, "coupon-service", refused).await;
    let letters = dead_letters(&system, "order-service", 1).await;
    assert_eq!(
        reason(&letters[0]),
        "CouponApplyFailed names coupon 4, but the order carries no coupon"
    );
    assert_eq!(system.order(&id).await["status"], "PENDING");
    system.restart_product_service().await;
    assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");
    system.stop().await;
}

#[tokio::test]
async fn an_order_whose_quantities_would_overflow_is_dead_lettered_and_reserves_nothing() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let before = system.product(mug).await;
    // Two lines of one product at the largest quantity, priced 0 so that the total is right.
    let line = contract::OrderLine {
        product_id: mug,
        quantity: i64::MAX,
        unit_price: 0,
    };
    let created = contract::OrderCreated {
        order_id: uuid::Uuid::now_v7(),
        user_id: 1,
        items: vec![line.clone(), line],
        total_amount: 0,
        coupon_id: None,
        created_at: chrono::Utc::now(),
    };
    forge(&system, topics::ORDER_EVENTS, "order-service", created).await;
    let letters = dead_letters(&system, "product-service", 1).await;
    assert!(
        reason(&letters[0]).contains("items[0].quantity must be at most 1000000"),
        "{letters:?}"
    );
    assert_eq!(system.product(mug).await, before, "nothing reserved");
    system.stop().await;
}

#[tokio::test]
async fn an_upsert_older_than_the_catalogs_entry_never_rolls_its_price_back() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let upsert = |price, age: chrono::Duration| {
        let mut envelope = contract::Envelope::new(
            "product-service",
            contract::ProductUpserted {
                product_id: mug,
                name: "Mug".into(),
                price,
            },
            None,
        );
        envelope.occurred_at -= age;
        envelope
    };
    // An upsert from an hour ago, as a replayed or redelivered old event would be, then a
    // new one: the first changes nothing, the second sets the price.
    let old = upsert(0, chrono::Duration::hours(1));
    helpers::forge_envelope(&system, topics::PRODUCT_CATALOG, &old).await;
    let new = upsert(1600, chrono::Duration::zero());
    helpers::forge_envelope(&system, topics::PRODUCT_CATALOG, &new).await;
    let url = system.order.url(&format!("/catalog/{mug}"));
    eventually("the newer price in the catalog", SETTLE, || async {
        (system.get(url.clone()).await.1["price"] == 1600).then_some(())
    })
    .await;
    // And the old one again, after the new: still nothing.
    helpers::forge_envelope(
        &system,
        topics::PRODUCT_CATALOG,
        &upsert(0, chrono::Duration::hours(2)),
    )
    .await;
    eventually("both old upserts handled", SETTLE, || async {
        let handled = metric(
            &system.order,
            "events_handled_total{topic=\"product.catalog\",event_type=\"ProductUpserted\"}",
        )
        .await;
        (handled >= 4.0).then_some(())
    })
    .await;
    assert_eq!(system.get(url).await.1["price"], 1600);
    system.stop().await;
}
