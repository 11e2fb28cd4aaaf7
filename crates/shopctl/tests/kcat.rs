//! Debian's kcat (librdkafka 2.0) against the local stack, as the README's ops story runs it:
//! `kcat -L` lists the topics and `kcat -C -t order.events -K: -e` prints a placed order's
//! events. On Tansu this needs the broker's fifth patch (broker/PATCHES.md): before it,
//! kcat failed every request with "ApiVersionRequest failed: Local: Read underflow".

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use shopctl::stack::Service;

mod local;

fn kcat(brokers: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["30", "kcat", "-b", brokers])
        .args(args)
        .output()
        .expect("kcat (Debian's package; scripts/install-test-tools.sh installs it)")
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_kcat_lists_the_topics_and_tails_a_placed_orders_events() {
    let stack = local::start_stack("kcat").await;
    let brokers = stack.brokers();

    let listed = kcat(&brokers, &["-L"]);
    let listing = printed(&listed);
    assert!(listed.status.success(), "kcat -L: {listing}");
    for topic in contract::topics::TOPICS {
        assert!(
            listing.contains(&format!("topic \"{}\" with 3 partitions", topic.name)),
            "kcat -L lists {}: {listing}",
            topic.name
        );
    }

    // Creating a product is an operator's act.
    let http = testkit::operator_client_with(stack.admin_token());
    let product: serde_json::Value = http
        .post(format!("{}/products", stack.url(Service::ProductService)))
        .json(&json!({ "name": "Mug", "price": 1500, "stock": 10 }))
        .send()
        .await
        .expect("POST /products")
        .json()
        .await
        .expect("JSON");
    let product_id = product["product_id"].as_i64().expect("a product id");
    let orders = stack.url(Service::OrderService);
    shopctl::api::wait_for_catalog(&orders, product_id)
        .await
        .expect("the product reaches the catalog");
    let placed: serde_json::Value = http
        .post(format!("{orders}/orders"))
        .json(&json!({ "user_id": 7, "items": [{ "product_id": product_id, "quantity": 1 }] }))
        .send()
        .await
        .expect("POST /orders")
        .json()
        .await
        .expect("JSON");
    let order_id = placed["order_id"].as_str().expect("an order id").to_owned();
    let order = shopctl::api::wait_for_end(&orders, &order_id, Duration::from_secs(30))
        .await
        .expect("the order ends");
    assert_eq!(order["status"], "CONFIRMED", "{order}");

    // The README's line, with -e to stop at the end of the topic.
    let tailed = testkit::eventually(
        "kcat to print the order's events",
        Duration::from_secs(30),
        || {
            let tailed = kcat(&brokers, &["-C", "-t", "order.events", "-K:", "-e"]);
            let text = printed(&tailed);
            std::future::ready(
                (tailed.status.success()
                    && text.contains("OrderConfirmed")
                    && text.contains(&order_id))
                .then_some(text),
            )
        },
    )
    .await;
    let lines: Vec<&str> = tailed
        .lines()
        .filter(|line| line.starts_with(&format!("{order_id}:")))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("\"OrderCreated\""))
            && lines.iter().any(|l| l.contains("\"OrderConfirmed\"")),
        "key:value lines of the order's events: {tailed}"
    );
}
