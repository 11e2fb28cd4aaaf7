//! The synchronous baseline against a real database and the data-platform mock: an order is
//! confirmed only once every step, the data platform included, has succeeded; any failure
//! leaves nothing behind.

use std::time::Duration;

use kit::RunningApp;
use serde_json::{Value, json};

struct Baseline {
    facade: RunningApp,
    platform: RunningApp,
    http: reqwest::Client,
}

impl Baseline {
    async fn start(label: &str) -> Baseline {
        let platform = data_platform_mock::build(testkit::mock_config())
            .await
            .expect("the mock starts")
            .spawn();
        let url = testkit::fresh_database(label).await.expect("a database");
        let facade = sync_facade::build(sync_facade::Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            database: kit::db::DatabaseSettings::new(url),
            http: Default::default(),
            data_platform_url: platform.url(""),
            data_platform_timeout: Duration::from_secs(2),
            log: Default::default(),
        })
        .await
        .expect("the baseline starts")
        .spawn();
        Baseline {
            facade,
            platform,
            http: testkit::operator_client(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = self
            .http
            .post(self.facade.url(path))
            .json(&body)
            .send()
            .await
            .expect("an answer");
        (answer.status().as_u16(), answer.json().await.expect("JSON"))
    }

    async fn get(&self, path: &str) -> Value {
        let answer = self.http.get(self.facade.url(path)).send().await.unwrap();
        answer.json().await.expect("JSON")
    }

    /// A product with 3 units at 15.00 and a coupon of `kind` and `value` for user 7.
    async fn mug_and_coupon(&self, kind: &str, value: i64) -> (Value, Value) {
        let (_, mug) = self
            .post(
                "/products",
                json!({ "name": "Mug", "price": 1500, "stock": 3 }),
            )
            .await;
        let (_, coupon) = self
            .post(
                "/coupons",
                json!({ "user_id": 7, "kind": kind, "value": value }),
            )
            .await;
        (mug, coupon)
    }

    async fn platform_received(&self) -> u64 {
        let kept: Value = reqwest::get(self.platform.url("/v1/orders"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        kept["received"].as_u64().unwrap()
    }

    async fn platform_fails(&self, rate: f64) {
        self.http
            .put(self.platform.url("/v1/settings"))
            .json(&json!({ "failure_rate": rate }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
}

#[tokio::test]
async fn an_order_is_confirmed_in_its_answer_with_stock_taken_coupon_used_and_the_platform_told() {
    let system = Baseline::start("facade_ok").await;
    let (mug, coupon) = system.mug_and_coupon("PERCENT", 10).await;
    let body = json!({
        "user_id": 7,
        "items": [{ "product_id": mug["product_id"], "quantity": 2 }],
        "coupon_id": coupon["coupon_id"],
    });
    let (status, order) = system.post("/orders", body.clone()).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "CONFIRMED");
    assert_eq!(order["total_amount"], 3000);
    assert_eq!(order["discount_amount"], 300);
    assert_eq!(order["final_amount"], 2700);
    let product = system.get(&format!("/catalog/{}", mug["product_id"])).await;
    assert_eq!(product["available"], 1);
    assert_eq!(system.platform_received().await, 1);

    let mut again = body.clone();
    again["items"][0]["quantity"] = json!(1);
    let (status, again) = system.post("/orders", again).await;
    assert_eq!(
        (status, &again["error"]["code"]),
        (409, &json!("coupon_rejected"))
    );
    let stored = system
        .get(&format!("/orders/{}", order["order_id"].as_str().unwrap()))
        .await;
    assert_eq!(stored["final_amount"], 2700);

    let (status, short) = system
        .post(
            "/orders",
            json!({ "user_id": 7, "items": [{ "product_id": mug["product_id"], "quantity": 2 }] }),
        )
        .await;
    assert_eq!(
        (status, &short["error"]["code"]),
        (409, &json!("out_of_stock"))
    );
    let product = system.get(&format!("/catalog/{}", mug["product_id"])).await;
    assert_eq!(product["available"], 1, "a failed order takes nothing");
}

#[tokio::test]
async fn when_the_data_platform_fails_the_order_fails_and_nothing_is_kept() {
    let system = Baseline::start("facade_down").await;
    let (mug, coupon) = system.mug_and_coupon("FIXED", 500).await;
    system.platform_fails(1.0).await;
    let body = json!({
        "user_id": 7,
        "items": [{ "product_id": mug["product_id"], "quantity": 1 }],
        "coupon_id": coupon["coupon_id"],
    });
    let (status, failed) = system.post("/orders", body.clone()).await;
    assert_eq!(
        (status, &failed["error"]["code"]),
        (502, &json!("data_platform_failed"))
    );
    let product = system.get(&format!("/catalog/{}", mug["product_id"])).await;
    assert_eq!(product["available"], 3, "the stock is given back");

    system.platform_fails(0.0).await;
    let (status, order) = system.post("/orders", body).await;
    assert_eq!(
        status, 201,
        "the coupon was not used by the failed order: {order}"
    );
    assert_eq!(order["discount_amount"], 500);
}

#[tokio::test]
async fn bad_input_gets_the_order_services_error_codes() {
    let system = Baseline::start("facade_bad").await;
    let (status, answer) = system
        .post("/orders", json!({ "user_id": 0, "items": [] }))
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (422, &json!("invalid_user_id"))
    );
    let (status, answer) = system
        .post(
            "/orders",
            json!({ "user_id": 1, "items": [{ "product_id": 99, "quantity": 1 }] }),
        )
        .await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (422, &json!("unknown_product"))
    );
}
