//! The baseline's API: the saga's request bodies and answers, served by one process.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::CouponKind as Kind;
use kit::openapi::{OpenApi, Param};
use kit::{ApiError, ApiJson, ApiPath, Db, now_ms};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::error_code::FacadeCode;
use crate::store::{self, Line, Order, Product};

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    pub db: Db,
    /// The client of the data platform: bounded by its timeout, following no redirect.
    pub platform: reqwest::Client,
    /// `<DATA_PLATFORM_URL>/v1/orders`.
    pub orders_url: String,
}

type Extract = axum::extract::State<State>;

/// The API's operations, for `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut api = OpenApi::new(
        "sync-facade",
        "The synchronous baseline: one service, one transaction per order.",
    );
    api.operation("post", "/orders", "Place an order and wait for all of it")
        .body::<NewOrder>()
        .response::<Order>(201, "the order, CONFIRMED")
        .errors(&[400, 409, 413, 415, 422, 502])
        .add();
    api.operation("get", "/orders/{id}", "Show an order")
        .param("id", Param::Uuid)
        .response::<Order>(200, "the order")
        .errors(&[404])
        .add();
    api.operation("post", "/products", "Create a product")
        .body::<NewProduct>()
        .response::<Product>(201, "the product")
        .errors(&[400, 413, 415, 422])
        .add();
    api.operation("get", "/catalog/{id}", "Show a product")
        .param("id", Param::Integer)
        .response::<Product>(200, "the product")
        .errors(&[404])
        .add();
    api.operation("post", "/coupons", "Create a coupon")
        .body::<NewCoupon>()
        .errors(&[400, 413, 415, 422])
        .add();
    api.document()
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/orders", post(place))
        .route("/orders/{id}", get(show_order))
        .route("/products", post(create_product))
        .route("/catalog/{id}", get(show_product))
        .route("/coupons", post(create_coupon))
        .with_state(state)
        .merge(kit::openapi::route(openapi()))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    user_id: i64,
    items: Vec<NewLine>,
    #[serde(default)]
    coupon_id: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewLine {
    product_id: i64,
    quantity: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewProduct {
    name: String,
    price: i64,
    stock: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewCoupon {
    user_id: i64,
    kind: Kind,
    value: i64,
}

/// The old facade: every step in one transaction, the data platform included, so that a
/// failure anywhere undoes everything and fails the order.
async fn place(
    axum::extract::State(state): Extract,
    ApiJson(new): ApiJson<NewOrder>,
) -> Result<impl IntoResponse, ApiError> {
    let mut lines: Vec<(i64, i64)> = new
        .items
        .iter()
        .map(|l| (l.product_id, l.quantity))
        .collect();
    // The order service's own rules, so that both refuse the same requests.
    contract::order_request::validate(new.user_id, &lines, new.coupon_id)
        .map_err(|refused| ApiError::new(refused.rule, refused.message))?;
    // In product order, so that two orders never wait on each other's rows in a circle.
    lines.sort_unstable();
    let order_id = uuid::Uuid::now_v7().to_string();
    let mut tx = kit::db::begin(&state.db).await?;
    let mut items = Vec::with_capacity(lines.len());
    for (product_id, quantity) in lines {
        let Some(unit_price) = store::take_stock(&mut tx, product_id, quantity).await? else {
            return Err(match store::find_product(&mut tx, product_id).await? {
                Some(_) => ApiError::new(
                    FacadeCode::OutOfStock,
                    format!("product {product_id} has fewer than {quantity} units"),
                ),
                None => ApiError::new(
                    FacadeCode::UnknownProduct,
                    format!("product {product_id} does not exist"),
                ),
            });
        };
        items.push(Line {
            product_id,
            quantity,
            unit_price,
        });
    }
    let total = items
        .iter()
        .try_fold(0i64, |sum, l| {
            sum.checked_add(l.unit_price.checked_mul(l.quantity)?)
        })
        .ok_or_else(|| ApiError::new(FacadeCode::TotalTooLarge, "the order's total overflows"))?;
    let discount_amount = match new.coupon_id {
        None => 0,
        Some(coupon_id) => apply_coupon(&mut tx, coupon_id, new.user_id, &order_id, total).await?,
    };
    let order = Order {
        order_id,
        user_id: new.user_id,
        status: "CONFIRMED".to_owned(),
        items,
        total_amount: total,
        discount_amount,
        final_amount: total - discount_amount,
        coupon_id: new.coupon_id,
    };
    store::insert_order(&mut tx, &order, now_ms()).await?;
    send_to_data_platform(&state, &order).await?;
    tx.commit().await?;
    tracing::info!(order_id = %order.order_id, "order placed");
    Ok((StatusCode::CREATED, Json(order)))
}

/// Uses the coupon for the order; the discount it gives.
async fn apply_coupon(
    tx: &mut kit::Conn,
    coupon_id: i64,
    user_id: i64,
    order_id: &str,
    total: i64,
) -> Result<i64, ApiError> {
    let rejected = |why: String| ApiError::new(FacadeCode::CouponRejected, why);
    let coupon = store::find_coupon(tx, coupon_id)
        .await?
        .ok_or_else(|| rejected(format!("coupon {coupon_id} does not exist")))?;
    if coupon.user_id != user_id {
        return Err(rejected(format!(
            "coupon {coupon_id} belongs to another user"
        )));
    }
    if coupon.used_by_order.is_some() || !store::use_coupon(tx, coupon_id, order_id).await? {
        return Err(rejected(format!("coupon {coupon_id} is already used")));
    }
    let kind = Kind::parse(&coupon.kind).ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!(
            "coupon {coupon_id} has kind {}",
            coupon.kind
        ))
    })?;
    Ok(kind.discount(coupon.value, total))
}

/// Sends the order to the data platform and waits for its answer, inside the order's
/// transaction: the old design's coupling, kept on purpose.
async fn send_to_data_platform(state: &State, order: &Order) -> Result<(), ApiError> {
    let body = json!({
        "event_type": "OrderConfirmed",
        "order_id": order.order_id,
        "user_id": order.user_id,
        "items": order.items,
        "total_amount": order.total_amount,
        "discount_amount": order.discount_amount,
        "final_amount": order.final_amount,
    });
    let failed = |why: String| {
        ApiError::new(
            FacadeCode::DataPlatformFailed,
            format!("the data platform did not take the order, so it was not placed: {why}"),
        )
    };
    let answer = state
        .platform
        .post(&state.orders_url)
        .header("Idempotency-Key", &order.order_id)
        .json(&body)
        .send()
        .await
        .map_err(|error| failed(error.to_string()))?;
    if !answer.status().is_success() {
        return Err(failed(format!("it answered {}", answer.status())));
    }
    Ok(())
}

async fn show_order(
    axum::extract::State(state): Extract,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Order>, ApiError> {
    let mut conn = state.db.acquire().await?;
    store::find_order(&mut conn, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(FacadeCode::OrderNotFound, format!("no order {id}")))
}

async fn create_product(
    axum::extract::State(state): Extract,
    ApiJson(new): ApiJson<NewProduct>,
) -> Result<impl IntoResponse, ApiError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            FacadeCode::InvalidName,
            "name must not be empty",
        ));
    }
    if new.price < 0 {
        return Err(ApiError::new(
            FacadeCode::InvalidPrice,
            "price must not be negative",
        ));
    }
    if new.stock < 0 {
        return Err(ApiError::new(
            FacadeCode::InvalidStock,
            "stock must not be negative",
        ));
    }
    let mut conn = state.db.acquire().await?;
    let product = store::insert_product(&mut conn, name, new.price, new.stock).await?;
    Ok((StatusCode::CREATED, Json(product)))
}

async fn show_product(
    axum::extract::State(state): Extract,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Product>, ApiError> {
    let mut conn = state.db.acquire().await?;
    store::find_product(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(FacadeCode::ProductNotFound, format!("no product {id}")))
}

async fn create_coupon(
    axum::extract::State(state): Extract,
    ApiJson(new): ApiJson<NewCoupon>,
) -> Result<impl IntoResponse, ApiError> {
    if new.user_id < 1 {
        return Err(ApiError::new(
            FacadeCode::InvalidUserId,
            "user_id must be positive",
        ));
    }
    if !new.kind.valid_values().contains(&new.value) {
        return Err(ApiError::new(
            FacadeCode::InvalidValue,
            format!(
                "a {} coupon's value must be in {:?}",
                new.kind.as_str(),
                new.kind.valid_values()
            ),
        ));
    }
    let mut conn = state.db.acquire().await?;
    let id = store::insert_coupon(&mut conn, new.user_id, new.kind.as_str(), new.value).await?;
    let coupon = json!({
        "coupon_id": id, "user_id": new.user_id, "kind": new.kind, "value": new.value,
        "used_by_order": null,
    });
    Ok((StatusCode::CREATED, Json(coupon)))
}
