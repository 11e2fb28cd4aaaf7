//! `shopctl order|product|coupon …`: shortcuts over the services' HTTP APIs that print the
//! JSON answer, and fail with the service's error code, or clearly when nobody answers.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Cli;

/// How long `order place --wait` waits for an order to leave PENDING.
const WAIT_FOR_ORDER: Duration = Duration::from_secs(60);

/// The kind of a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CouponKind {
    #[value(name = "FIXED")]
    Fixed,
    #[value(name = "PERCENT")]
    Percent,
}

impl CouponKind {
    /// As the coupon API spells it.
    pub fn wire(self) -> &'static str {
        match self {
            CouponKind::Fixed => "FIXED",
            CouponKind::Percent => "PERCENT",
        }
    }
}

/// One call to a service.
#[derive(Debug)]
pub struct Call<'a> {
    pub service: &'a str,
    pub method: reqwest::Method,
    pub url: String,
    pub body: Option<Value>,
    pub idempotency_key: Option<&'a str>,
    /// Sent as `Authorization: Bearer`, for operator endpoints.
    pub admin_token: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A call without an `Idempotency-Key`.
    pub fn new(
        service: &'a str,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> Self {
        Call {
            service,
            method,
            url,
            body,
            idempotency_key: None,
            admin_token: None,
        }
    }

    /// The call, with the admin token an operator endpoint needs.
    pub fn admin(mut self, token: Option<&'a str>) -> Self {
        self.admin_token = token;
        self
    }
}

/// Makes the call and returns the JSON body of a 2xx answer; anything else is an error that
/// says what the service said.
pub async fn call(call: Call<'_>) -> anyhow::Result<Value> {
    let client = http_client();
    let mut request = client.request(call.method.clone(), &call.url);
    if let Some(body) = &call.body {
        request = request.json(body);
    }
    if let Some(key) = call.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(token) = call.admin_token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| {
        format!(
            "cannot reach {} at {}; is it running? (shopctl up)",
            call.service, call.url
        )
    })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("unknown");
        let message = body["error"]["message"].as_str().unwrap_or("");
        bail!("{} answered {status}: {code}: {message}", call.service);
    }
    Ok(body)
}

/// How long a call to a service may take, and its connection.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP client of every call shopctl and the console make: none waits forever on a
/// service that accepted the connection and never answers.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .expect("an HTTP client with timeouts")
}

/// Waits until the order service at `order_url` has product `product_id` in its catalog
/// replica (fed by `product.catalog`), so that orders for it are priced.
pub async fn wait_for_catalog(order_url: &str, product_id: i64) -> anyhow::Result<()> {
    let client = http_client();
    let url = format!("{}/catalog/{product_id}", order_url.trim_end_matches('/'));
    kit::poll::until(
        &format!("product {product_id} reaching the order service's catalog"),
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let response = client.get(&url).send().await.ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await?;
    Ok(())
}

/// Waits until order `order_id` at the order service at `order_url` has left PENDING (within
/// `within`), and returns it as the service answers it.
pub async fn wait_for_end(
    order_url: &str,
    order_id: &str,
    within: Duration,
) -> anyhow::Result<Value> {
    let client = http_client();
    let url = format!("{}/orders/{order_id}", order_url.trim_end_matches('/'));
    let order = kit::poll::until(
        &format!("order {order_id} leaving PENDING"),
        within,
        Duration::from_millis(100),
        || async {
            let order: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
            let pending = contract::OrderStatus::Pending.as_str();
            (order["status"].is_string() && order["status"] != pending).then_some(order)
        },
    )
    .await?;
    Ok(order)
}

/// `product_id:quantity` as given on the command line.
pub fn parse_item(text: &str) -> Result<(i64, i64), String> {
    let (product, quantity) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not PRODUCT_ID:QUANTITY"))?;
    let product = product
        .trim()
        .parse()
        .map_err(|_| format!("`{product}` is not a product id"))?;
    let quantity = quantity
        .trim()
        .parse()
        .map_err(|_| format!("`{quantity}` is not a quantity"))?;
    Ok((product, quantity))
}

#[derive(Debug, clap::Subcommand)]
pub enum OrderCommand {
    /// Places an order.
    Place {
        #[arg(long)]
        user: i64,
        /// `PRODUCT_ID:QUANTITY`; repeat for more lines.
        #[arg(long = "item", required = true, value_parser = parse_item)]
        items: Vec<(i64, i64)>,
        #[arg(long)]
        coupon: Option<i64>,
        /// Makes the request safe to repeat.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait until the order is CONFIRMED or CANCELLED and print it then; fail (status 1)
        /// if it is still PENDING after 60 s.
        #[arg(long)]
        wait: bool,
    },
    /// Shows an order.
    Get { id: String },
    /// Cancels an order.
    Cancel { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum ProductCommand {
    /// Creates a product.
    Create {
        #[arg(long)]
        name: String,
        /// Minor units.
        #[arg(long)]
        price: i64,
        #[arg(long)]
        stock: i64,
    },
    /// Shows a product with its available and reserved stock.
    Get { id: i64 },
    /// Adds stock.
    Restock {
        id: i64,
        #[arg(long)]
        quantity: i64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CouponCommand {
    /// Creates a coupon.
    Create {
        #[arg(long)]
        user: i64,
        /// FIXED (minor units off) or PERCENT (of the total).
        #[arg(long, value_enum, ignore_case = true)]
        kind: CouponKind,
        #[arg(long)]
        value: i64,
        /// RFC 3339, such as 2026-12-31T23:59:59Z.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Shows a coupon.
    Get { id: i64 },
}

fn show(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Runs `shopctl order …`.
pub async fn order(cli: &Cli, command: &OrderCommand) -> anyhow::Result<()> {
    let base = cli.order_url.trim_end_matches('/');
    let get = |id: &str| Call {
        service: contract::Service::OrderService.name(),
        method: Method::GET,
        url: format!("{base}/orders/{id}"),
        body: None,
        idempotency_key: None,
        admin_token: None,
    };
    let answer = match command {
        OrderCommand::Place {
            user,
            items,
            coupon,
            idempotency_key,
            wait,
        } => {
            let items: Vec<Value> = items
                .iter()
                .map(|(p, q)| json!({ "product_id": p, "quantity": q }))
                .collect();
            let mut body = json!({ "user_id": user, "items": items });
            if let Some(coupon) = coupon {
                body["coupon_id"] = json!(coupon);
            }
            let placed = call(Call {
                service: contract::Service::OrderService.name(),
                method: Method::POST,
                url: format!("{base}/orders"),
                body: Some(body),
                idempotency_key: idempotency_key.as_deref(),
                admin_token: None,
            })
            .await?;
            if *wait {
                let id = placed["order_id"]
                    .as_str()
                    .context("the order service answered without an order_id")?
                    .to_owned();
                let settled = kit::poll::until(
                    &format!("order {id} leaving PENDING"),
                    WAIT_FOR_ORDER,
                    Duration::from_millis(20),
                    || async {
                        match call(get(&id)).await {
                            Ok(order)
                                if order["status"] == contract::OrderStatus::Pending.as_str() =>
                            {
                                None
                            }
                            answer => Some(answer),
                        }
                    },
                )
                .await;
                match settled {
                    Ok(answer) => answer?,
                    Err(_) => {
                        show(&call(get(&id)).await?);
                        anyhow::bail!(
                            "order {id} is still PENDING after {} s; is every service up? (see /health/ready of each)",
                            WAIT_FOR_ORDER.as_secs()
                        );
                    }
                }
            } else {
                placed
            }
        }
        OrderCommand::Get { id } => call(get(id)).await?,
        OrderCommand::Cancel { id } => {
            call(Call {
                service: contract::Service::OrderService.name(),
                method: Method::POST,
                url: format!("{base}/orders/{id}/cancel"),
                body: None,
                idempotency_key: None,
                admin_token: None,
            })
            .await?
        }
    };
    show(&answer);
    Ok(())
}

/// Runs `shopctl product …`.
pub async fn product(cli: &Cli, command: &ProductCommand) -> anyhow::Result<()> {
    let base = cli.product_url.trim_end_matches('/');
    let (method, url, body) = match command {
        ProductCommand::Create { name, price, stock } => (
            Method::POST,
            format!("{base}/products"),
            Some(json!({ "name": name, "price": price, "stock": stock })),
        ),
        ProductCommand::Get { id } => (Method::GET, format!("{base}/products/{id}"), None),
        ProductCommand::Restock { id, quantity } => (
            Method::POST,
            format!("{base}/products/{id}/restock"),
            Some(json!({ "quantity": quantity })),
        ),
    };
    // Creating and restocking are an operator's acts: they send the admin token.
    show(
        &call(
            Call::new(contract::Service::ProductService.name(), method, url, body)
                .admin(cli.admin_token()),
        )
        .await?,
    );
    Ok(())
}

/// Runs `shopctl coupon …`.
pub async fn coupon(cli: &Cli, command: &CouponCommand) -> anyhow::Result<()> {
    let base = cli.coupon_url.trim_end_matches('/');
    let (method, url, body) = match command {
        CouponCommand::Create {
            user,
            kind,
            value,
            expires_at,
        } => {
            let mut body = json!({ "user_id": user, "kind": kind.wire(), "value": value });
            if let Some(expires_at) = expires_at {
                body["expires_at"] = json!(expires_at);
            }
            (Method::POST, format!("{base}/coupons"), Some(body))
        }
        CouponCommand::Get { id } => (Method::GET, format!("{base}/coupons/{id}"), None),
    };
    // Creating a coupon is an operator's act: it sends the admin token.
    show(
        &call(
            Call::new(contract::Service::CouponService.name(), method, url, body)
                .admin(cli.admin_token()),
        )
        .await?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_product_colon_quantity() {
        assert_eq!(parse_item("3:2"), Ok((3, 2)));
        assert!(parse_item("3").is_err());
        assert!(parse_item("x:2").is_err());
    }
}
