//! The HTTP client of a chaos run: it retries while a service restarts, as a storefront would.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::stack::{Service, Stack};

/// The HTTP client of the run, retrying while a service restarts.
#[derive(Clone)]
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) order: String,
    pub(super) product: String,
    pub(super) coupon: String,
    pub(super) platform: String,
    /// For the operator endpoints it calls (products, coupons, the mock's settings).
    pub(super) admin_token: String,
}

impl Client {
    pub(super) fn new(stack: &Stack) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            order: stack.url(Service::OrderService),
            product: stack.url(Service::ProductService),
            coupon: stack.url(Service::CouponService),
            platform: stack.url(Service::DataPlatformMock),
            admin_token: stack.admin_token().to_owned(),
        }
    }

    /// Sends until a service answers (a killed one is back within seconds): the status and
    /// JSON body of the first answer.
    pub(super) async fn send(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<(u16, Value)> {
        kit::poll::retry(
            Duration::from_secs(90),
            Duration::from_millis(200),
            || async {
                match request().send().await {
                    Ok(response) if response.status().as_u16() < 500 => {
                        let status = response.status().as_u16();
                        Ok((status, response.json().await.unwrap_or(Value::Null)))
                    }
                    Ok(response) => bail!("the service answered {}", response.status()),
                    Err(error) => Err(error).context("no service answered for 90 s"),
                }
            },
        )
        .await
    }

    /// Waits until the order service's catalog replica has a product.
    pub(super) async fn wait_for_catalog(&self, product_id: i64) -> anyhow::Result<()> {
        crate::api::wait_for_catalog(&self.order, product_id).await
    }

    /// `POST /orders` with an `Idempotency-Key`, retried until the order service answers.
    pub(super) async fn place(&self, key: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}/orders", self.order);
        self.send(|| {
            self.http
                .post(&url)
                .header("Idempotency-Key", key)
                .json(body)
        })
        .await
    }

    pub(super) async fn get(&self, base: &str, path: &str) -> anyhow::Result<Value> {
        let url = format!("{base}{path}");
        let (status, body) = self.send(|| self.http.get(&url)).await?;
        if status != 200 {
            bail!("GET {url}: {status} {body}");
        }
        Ok(body)
    }

    pub(super) async fn post(
        &self,
        base: &str,
        path: &str,
        body: Value,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{base}{path}");
        // The run creates its products and coupons, which is an operator's act; the order
        // service ignores the token.
        self.send(|| {
            self.http
                .post(&url)
                .bearer_auth(&self.admin_token)
                .json(&body)
        })
        .await
    }

    pub(super) async fn put(&self, base: &str, path: &str, body: Value) -> anyhow::Result<()> {
        let url = format!("{base}{path}");
        self.send(|| {
            self.http
                .put(&url)
                .bearer_auth(&self.admin_token)
                .json(&body)
        })
        .await
        .map(|_| ())
    }
}
