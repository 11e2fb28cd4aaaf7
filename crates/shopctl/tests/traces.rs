//! One order, one trace: the local stack exports its spans over OTLP/HTTP to a receiver this
//! test runs, and the spans of every service the order touches form one tree.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};
use shopctl::stack::Service;
use testkit::eventually;

mod local;

/// One exported span, as the receiver keeps it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

type Received = Arc<Mutex<Vec<Span>>>;

async fn receive(State(received): State<Received>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut received = received.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn post_json(http: &reqwest::Client, url: String, body: Value, trace: Option<&str>) -> Value {
    let mut request = http.post(url).json(&body);
    if let Some(traceparent) = trace {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("an answer");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_order_is_one_trace_across_every_service_with_each_span_under_its_cause() {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let stack = local::start_stack_with(
        "traces",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    // The test creates a product and a coupon, an operator's acts.
    let http = testkit::operator_client_with(stack.admin_token());
    let product = post_json(
        &http,
        format!("{}/products", stack.url(Service::ProductService)),
        json!({ "name": "Mug", "price": 1500, "stock": 10 }),
        None,
    )
    .await["product_id"]
        .as_i64()
        .expect("an id");
    let coupon = post_json(
        &http,
        format!("{}/coupons", stack.url(Service::CouponService)),
        json!({ "user_id": 7, "kind": "FIXED", "value": 100 }),
        None,
    )
    .await["coupon_id"]
        .as_i64()
        .expect("an id");
    let orders = stack.url(Service::OrderService);
    shopctl::api::wait_for_catalog(&orders, product)
        .await
        .expect("the catalog");

    // The storefront's own span is the parent of the order's request.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let storefront = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{storefront}-01");
    let body = json!({ "user_id": 7, "items": [{ "product_id": product, "quantity": 1 }], "coupon_id": coupon });
    let order_id =
        post_json(&http, format!("{orders}/orders"), body, Some(&traceparent)).await["order_id"]
            .as_str()
            .expect("an id")
            .to_owned();
    let order = shopctl::api::wait_for_end(&orders, &order_id, Duration::from_secs(30))
        .await
        .expect("the order ends");
    assert_eq!(order["status"], "CONFIRMED", "{order}");

    // Spans the order must have: who made each, and what it is.
    let wanted: BTreeSet<(&str, &str)> = [
        ("order-service", "POST /orders"),
        ("order-service", "order.events publish"),
        ("product-service", "order.events process"),
        ("product-service", "stock.events publish"),
        ("coupon-service", "order.events process"),
        ("coupon-service", "coupon.events publish"),
        ("order-service", "stock.events process"),
        ("order-service", "coupon.events process"),
        ("analytics-forwarder", "order.events process"),
        ("analytics-forwarder", "POST /v1/orders"),
    ]
    .into_iter()
    .collect();
    let spans = eventually(
        "every span of the order exported",
        Duration::from_secs(30),
        || async {
            let spans: Vec<Span> = received
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            let have: BTreeSet<(&str, &str)> = spans
                .iter()
                .map(|s| (s.service.as_str(), s.name.as_str()))
                .filter(|pair| wanted.contains(pair))
                .map(|(service, name)| {
                    *wanted
                        .iter()
                        .find(|(s, n)| *s == service && *n == name)
                        .expect("wanted")
                })
                .collect();
            // The forwarder delivers both OrderCreated and OrderConfirmed.
            let deliveries = spans
                .iter()
                .filter(|s| s.service == "analytics-forwarder" && s.name == "POST /v1/orders")
                .count();
            // Each service exports in batches of its own, so a span can arrive before its
            // parent does: wait until every parent is in too.
            let exported: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
            let parents_in = spans
                .iter()
                .filter(|s| s.name != "POST /orders")
                .all(|s| exported.contains(s.parent_span_id.as_str()));
            (have == wanted && deliveries >= 2 && parents_in).then_some(spans)
        },
    )
    .await;

    let ids: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for span in &spans {
        if span.name == "POST /orders" {
            assert_eq!(
                span.parent_span_id, storefront,
                "the request continues the storefront's span"
            );
            continue;
        }
        let parent = ids
            .get(span.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("{span:?} has a parent the trace does not have: {spans:#?}"));
        // Each hop is under what caused it: a publish under the work that wrote the row, a
        // consumer's handling under the publish of the message it handles.
        if span.name.ends_with(" process") {
            let topic = span.name.trim_end_matches(" process");
            assert_eq!(
                parent.name,
                format!("{topic} publish"),
                "{span:?} under {parent:?}"
            );
        }
        // A delivery is the forwarder's request under its handling of the event, and the data
        // platform's answer to it under that request.
        if span.name == "POST /v1/orders" && span.service == "data-platform-mock" {
            assert_eq!(
                (parent.service.as_str(), parent.name.as_str()),
                ("analytics-forwarder", "POST /v1/orders")
            );
        } else if span.name == "POST /v1/orders" {
            assert_eq!(parent.service, "analytics-forwarder");
            assert_eq!(parent.name, "order.events process");
        }
    }
    drop(stack);
}
