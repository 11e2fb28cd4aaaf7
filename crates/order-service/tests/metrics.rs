//! What an operator's Prometheus scrapes from the running saga: every family described, every
//! series there from the start, histograms of what takes time, and labels a client cannot
//! multiply.

mod helpers;

use std::collections::BTreeSet;
use std::time::Duration;

use helpers::{System, metric};
use kit::RunningApp;
use testkit::eventually;

/// The text of a service's `/metrics`, after checking its content type.
async fn scrape(http: &reqwest::Client, app: &RunningApp) -> String {
    let response = http.get(app.url("/metrics")).send().await.expect("metrics");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.expect("text")
}

/// Families with a `# TYPE` line but no `# HELP` line, and whether the text ends as
/// OpenMetrics requires.
fn undescribed(text: &str) -> Vec<String> {
    let named = |prefix: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix)?.split(' ').next().map(str::to_owned))
            .collect()
    };
    let helped = named("# HELP ");
    named("# TYPE ")
        .into_iter()
        .filter(|family| !helped.contains(family))
        .collect()
}

/// The metric names the saga dashboard's queries select: every name written before a `{`
/// (label matchers) or a `[` (a range), which is how the dashboard writes each selector.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/dashboards/saga.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut word = String::new();
            for c in expr.chars() {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    word.push(c);
                    continue;
                }
                if (c == '{' || c == '[') && !word.is_empty() {
                    names.insert(word.clone());
                }
                word.clear();
            }
        }
    }
    names
}

#[tokio::test]
async fn every_service_describes_its_families_and_records_an_order_end_to_end() {
    let system = System::start().await;
    let mug = system.create_product("Mug", 1500, 10).await;
    let id = system.place_accepted_order(7, &[(mug, 1)], None).await;
    assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");

    let product = system.product.as_ref().expect("running");
    for (name, app) in [
        ("order", &system.order),
        ("product", product),
        ("coupon", system.coupon_app()),
        ("forwarder", &system.forwarder),
    ] {
        let text = scrape(&system.http, app).await;
        assert!(text.ends_with("# EOF\n"), "{name}: {text}");
        assert_eq!(undescribed(&text), Vec::<String>::new(), "{name}");
        // Series an alert watches exist before anything happens to them.
        assert!(
            text.contains("outbox_relay_failures_total 0"),
            "{name}: {text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("events_dead_lettered_total{")
                    && l.contains("reason=\"rejected\"")
                    && l.ends_with(" 0")),
            "{name}: no dead letters yet, and the series says so: {text}"
        );
    }

    // Every series the Grafana dashboard queries is one the services expose (the lag once
    // each consumer has measured it).
    let wanted = dashboard_metrics();
    assert!(
        wanted.contains("saga_duration_seconds_bucket"),
        "{wanted:?}"
    );
    let missing = || async {
        let mut scraped = String::new();
        for app in [
            &system.order,
            product,
            system.coupon_app(),
            &system.forwarder,
        ] {
            scraped.push_str(&scrape(&system.http, app).await);
        }
        wanted
            .iter()
            .filter(|name| {
                !scraped.lines().any(|l| {
                    l.strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let found = kit::poll::until(
        "every series the dashboard queries",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { missing().await.is_empty().then_some(()) },
    );
    if found.await.is_err() {
        panic!(
            "the dashboard queries series no service exposes: {:?}",
            missing().await
        );
    }

    // The order's saga took some time, once, and it is in the order service's histogram.
    let saga = r#"saga_duration_seconds_count{outcome="confirmed"}"#;
    eventually(
        "the saga duration recorded",
        Duration::from_secs(10),
        || async { (metric(&system.order, saga).await == 1.0).then_some(()) },
    )
    .await;
    assert_eq!(
        metric(
            &system.order,
            r#"saga_duration_seconds_count{outcome="cancelled"}"#
        )
        .await,
        0.0
    );
    let posted =
        r#"http_request_duration_seconds_count{route="/orders",method="POST",status="202"}"#;
    assert_eq!(metric(&system.order, posted).await, 1.0);
    let handled =
        r#"event_handle_duration_seconds_count{topic="order.events",event_type="OrderCreated"}"#;
    assert!(metric(product, handled).await >= 1.0);
    eventually(
        "the forwarder's delivery timed",
        Duration::from_secs(20),
        || async {
            let delivered = r#"delivery_duration_seconds_count{outcome="delivered"}"#;
            (metric(&system.forwarder, delivered).await >= 1.0).then_some(())
        },
    )
    .await;
    assert!(metric(&system.order, "outbox_publish_delay_seconds_count").await >= 2.0);

    // A method nobody defined is counted as `other`, not as a series of its own.
    let invented = reqwest::Method::from_bytes(b"BREW").unwrap();
    let response = system
        .http
        .request(invented, system.order.url("/orders"))
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    let text = scrape(&system.http, &system.order).await;
    assert!(!text.contains("BREW"), "{text}");
    let other =
        format!(r#"http_requests_total{{route="/orders",method="other",status="{status}"}} 1"#);
    assert!(text.contains(&other), "{other} in {text}");
    system.stop().await;
}

#[tokio::test]
async fn each_service_counts_the_produce_and_fetch_requests_its_kafka_clients_send() {
    let system = System::start().await;
    let product = system.product.as_ref().expect("running");
    // Every series is there from the start, at zero until the first statistics.
    let text = scrape(&system.http, product).await;
    for client in ["producer", "consumer"] {
        for request in ["Produce", "Fetch", "Other"] {
            let series =
                format!(r#"kafka_requests_total{{client="{client}",request="{request}"}}"#);
            assert!(text.contains(&series), "{series} in {text}");
        }
    }
    let mug = system.create_product("Mug", 1500, 10).await;
    let id = system.place_accepted_order(7, &[(mug, 1)], None).await;
    assert_eq!(system.settled_order(&id).await["status"], "CONFIRMED");
    // The order service produced its events and consumed the product and coupon services'
    // answers; librdkafka's statistics say so within one interval (5 s).
    let produced = r#"kafka_requests_total{client="producer",request="Produce"}"#;
    let fetched = r#"kafka_requests_total{client="consumer",request="Fetch"}"#;
    eventually(
        "the order service's requests counted",
        Duration::from_secs(20),
        || async {
            let produce = metric(&system.order, produced).await;
            let fetch = metric(&system.order, fetched).await;
            (produce >= 2.0 && fetch >= 1.0).then_some(())
        },
    )
    .await;
    // A consumer's requests are not a producer's: the order service's consumer produces
    // nothing.
    assert_eq!(
        metric(
            &system.order,
            r#"kafka_requests_total{client="consumer",request="Produce"}"#
        )
        .await,
        0.0
    );
    system.stop().await;
}
