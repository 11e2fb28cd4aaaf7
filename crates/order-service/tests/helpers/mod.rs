//! The whole system for one test: its own Tansu broker, a fresh Postgres database per
//! service, every service in-process on a free port, and a small HTTP client that speaks
//! their APIs.

#![allow(dead_code)]

pub mod fuzz;

use std::time::Duration;

use eventing::CommonSettings;
use kit::RunningApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Broker, eventually, fresh_database};

/// How long a test waits for the system to settle before it fails.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub struct Options {
    pub saga_timeout: Duration,
    /// The analytics forwarder's retry budget per delivery.
    pub delivery_max_attempts: i64,
    /// The order service's `HTTP_MAX_CONCURRENT_REQUESTS`.
    pub order_max_concurrent_requests: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            saga_timeout: Duration::from_secs(30),
            delivery_max_attempts: 30,
            order_max_concurrent_requests: kit::http::HttpSettings::default()
                .max_concurrent_requests,
        }
    }
}

/// Every service of the saga, running.
pub struct System {
    pub broker: Broker,
    pub order: RunningApp,
    pub product: Option<RunningApp>,
    pub coupon: Option<RunningApp>,
    pub forwarder: RunningApp,
    pub forwarder_db: String,
    pub platform: RunningApp,
    pub order_db: String,
    pub product_db: String,
    pub coupon_db: String,
    pub options: Options,
    pub http: reqwest::Client,
}

pub fn common(db: &str, broker: &Broker) -> CommonSettings {
    let mut settings = CommonSettings::new(db, &broker.brokers);
    settings.relay.poll_interval = Duration::from_millis(100);
    settings.http.admin_token = Some(testkit::ADMIN_TOKEN.to_owned());
    settings
}

fn local() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

pub async fn start_order_service(db: &str, broker: &Broker, options: &Options) -> RunningApp {
    order_service::build(order_service::Config {
        http_addr: local(),
        saga_timeout: options.saga_timeout,
        deadline_check_interval: Duration::from_millis(200),
        common: {
            let mut common = common(db, broker);
            common.http.max_concurrent_requests = options.order_max_concurrent_requests;
            common
        },
    })
    .await
    .expect("order-service starts")
    .spawn()
}

pub async fn start_product_service(db: &str, broker: &Broker) -> RunningApp {
    product_service::build(product_service::Config {
        http_addr: local(),
        reconcile_interval: Duration::from_secs(1),
        common: common(db, broker),
    })
    .await
    .expect("product-service starts")
    .spawn()
}

pub async fn start_coupon_service(db: &str, broker: &Broker) -> RunningApp {
    coupon_service::build(coupon_service::Config {
        http_addr: local(),
        reconcile_interval: Duration::from_secs(1),
        common: common(db, broker),
    })
    .await
    .expect("coupon-service starts")
    .spawn()
}

/// The value of one series in a service's `/metrics`, 0 when absent.
pub async fn metric(app: &RunningApp, series: &str) -> f64 {
    let text = reqwest::get(app.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Whether a service answers `/health/ready` with 200.
pub async fn ready(app: &RunningApp) -> bool {
    reqwest::get(app.url("/health/ready"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

impl System {
    pub async fn start() -> System {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> System {
        let broker = Broker::start().await.expect("broker");
        let order_db = fresh_database("order").await.expect("database");
        let product_db = fresh_database("product").await.expect("database");
        let coupon_db = fresh_database("coupon").await.expect("database");
        let forwarder_db = fresh_database("forwarder").await.expect("database");
        let platform = data_platform_mock::build(testkit::mock_config())
            .await
            .expect("data-platform-mock starts")
            .spawn();
        let mut delivery = analytics_forwarder::deliver::DeliverySettings::new(platform.url(""));
        delivery.max_backoff = Duration::from_secs(1);
        delivery.max_attempts = options.delivery_max_attempts;
        let forwarder = analytics_forwarder::build(analytics_forwarder::Config::new(
            local(),
            delivery,
            common(&forwarder_db, &broker),
        ))
        .await
        .expect("analytics-forwarder starts")
        .spawn();
        let coupon = start_coupon_service(&coupon_db, &broker).await;
        let product = start_product_service(&product_db, &broker).await;
        let order = start_order_service(&order_db, &broker, &options).await;
        System {
            broker,
            order,
            product: Some(product),
            coupon: Some(coupon),
            forwarder,
            forwarder_db,
            platform,
            order_db,
            product_db,
            coupon_db,
            options,
            // The tests act as the operator too (restock, retry, the mock's settings).
            http: testkit::operator_client(),
        }
    }

    fn product_app(&self) -> &RunningApp {
        self.product.as_ref().expect("product-service is running")
    }

    pub fn coupon_app(&self) -> &RunningApp {
        self.coupon.as_ref().expect("coupon-service is running")
    }

    pub async fn stop_coupon_service(&mut self) {
        if let Some(coupon) = self.coupon.take() {
            coupon.stop().await;
        }
    }

    pub async fn restart_coupon_service(&mut self) {
        self.stop_coupon_service().await;
        self.coupon = Some(start_coupon_service(&self.coupon_db, &self.broker).await);
    }

    pub async fn stop_product_service(&mut self) {
        if let Some(product) = self.product.take() {
            product.stop().await;
        }
    }

    pub async fn restart_product_service(&mut self) {
        self.stop_product_service().await;
        self.product = Some(start_product_service(&self.product_db, &self.broker).await);
    }

    pub async fn post(&self, url: String, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, url: String) -> (StatusCode, Value) {
        let response = self.http.get(url).send().await.expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Creates a product and waits until the order service's catalog has it.
    pub async fn create_product(&self, name: &str, price: i64, stock: i64) -> i64 {
        let (status, body) = self
            .post(
                self.product_app().url("/products"),
                json!({ "name": name, "price": price, "stock": stock }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["product_id"].as_i64().expect("product id");
        let url = self.order.url(&format!("/catalog/{id}"));
        eventually(
            "the product in the order service's catalog",
            SETTLE,
            || async { (self.get(url.clone()).await.0 == StatusCode::OK).then_some(()) },
        )
        .await;
        id
    }

    pub async fn create_coupon(&self, user_id: i64, kind: &str, value: i64) -> i64 {
        let (status, body) = self
            .post(
                self.coupon_app().url("/coupons"),
                json!({ "user_id": user_id, "kind": kind, "value": value }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["coupon_id"].as_i64().expect("coupon id")
    }

    /// `POST /orders` with `items` as `(product_id, quantity)` pairs.
    /// The body is built before the request is sent, so the future borrows only `self`.
    pub fn place_order(
        &self,
        user_id: i64,
        items: &[(i64, i64)],
        coupon_id: Option<i64>,
    ) -> impl std::future::Future<Output = (StatusCode, Value)> + use<'_> {
        self.post(
            self.order.url("/orders"),
            order_body(user_id, items, coupon_id),
        )
    }

    /// Places an order that must be accepted, and returns its id.
    pub async fn place_accepted_order(
        &self,
        user_id: i64,
        items: &[(i64, i64)],
        coupon_id: Option<i64>,
    ) -> String {
        let (status, body) = self.place_order(user_id, items, coupon_id).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "PENDING");
        body["order_id"].as_str().expect("order id").to_owned()
    }

    pub async fn order(&self, id: &str) -> Value {
        let (status, body) = self.get(self.order.url(&format!("/orders/{id}"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until the order leaves PENDING and returns it.
    pub async fn settled_order(&self, id: &str) -> Value {
        eventually("the order to leave PENDING", SETTLE, || async {
            let order = self.order(id).await;
            (order["status"] != "PENDING").then_some(order)
        })
        .await
    }

    pub async fn product(&self, id: i64) -> Value {
        let (status, body) = self
            .get(self.product_app().url(&format!("/products/{id}")))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn coupon(&self, id: i64) -> Value {
        let (status, body) = self
            .get(self.coupon_app().url(&format!("/coupons/{id}")))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until a product shows exactly `available` and `reserved` units.
    pub async fn product_settles_at(&self, id: i64, available: i64, reserved: i64) -> Value {
        eventually(
            &format!("product {id} at {available} available, {reserved} reserved"),
            SETTLE,
            || async {
                let product = self.product(id).await;
                (product["available"] == available && product["reserved"] == reserved)
                    .then_some(product)
            },
        )
        .await
    }

    /// What the data platform kept.
    pub async fn platform_orders(&self) -> Value {
        self.get(self.platform.url("/v1/orders")).await.1
    }

    pub async fn set_platform_failure_rate(&self, rate: f64) {
        self.set_platform(json!({ "failure_rate": rate })).await;
    }

    /// Changes the data-platform mock's settings.
    pub async fn set_platform(&self, settings: Value) {
        let response = self
            .http
            .put(self.platform.url("/v1/settings"))
            .json(&settings)
            .send()
            .await
            .expect("request");
        assert!(response.status().is_success());
    }

    pub async fn stop(self) {
        self.order.stop().await;
        if let Some(product) = self.product {
            product.stop().await;
        }
        if let Some(coupon) = self.coupon {
            coupon.stop().await;
        }
        self.forwarder.stop().await;
        self.platform.stop().await;
    }
}

pub fn order_body(user_id: i64, items: &[(i64, i64)], coupon_id: Option<i64>) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(product_id, quantity)| json!({ "product_id": product_id, "quantity": quantity }))
        .collect();
    let mut body = json!({ "user_id": user_id, "items": items });
    if let Some(coupon_id) = coupon_id {
        body["coupon_id"] = json!(coupon_id);
    }
    body
}

/// Publishes `event` to `topic` in `producer`'s name, keyed as its producer would key it and
/// with no trace of its own: what a leaked credential, or a bug, could write.
pub async fn forge(
    system: &System,
    topic: &str,
    producer: &str,
    event: impl Into<contract::Event>,
) {
    let envelope = contract::Envelope::new(producer, event, None);
    forge_envelope(system, topic, &envelope).await;
}

/// Publishes `envelope` to `topic` as it is, keyed as its producer would key it.
pub async fn forge_envelope(system: &System, topic: &str, envelope: &contract::Envelope) {
    testkit::produce_raw(
        &system.broker.brokers,
        topic,
        &envelope.key(),
        envelope.to_json().as_bytes(),
        &[(contract::topics::HEADER_EVENT_TYPE, envelope.event_type())],
    )
    .await
    .expect("produce");
}

/// The names of the events on an order's timeline, in order.
pub fn timeline(order: &Value) -> Vec<String> {
    order["timeline"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["event"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
