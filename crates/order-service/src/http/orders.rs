//! `POST /orders`, `GET /orders/{id}`, `POST /orders/{id}/cancel`.
//!
//! Placing an order is one local transaction: the order, its lines, its first timeline entry,
//! the idempotency key and the `OrderCreated` outbox row commit together. The response never
//! waits for stock, coupon or the data platform.

use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use contract::{CancelReason, OrderCreated, OrderLine};
use kit::http::Committing;
use kit::openapi::{OpenApi, Param};
use kit::{ApiError, ApiJson, ApiPath, Conn, RequestTrace, TraceContext, now_ms};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::State;
use crate::domain::{self, Status};
use crate::error_code::OrderCode;
use crate::saga::{self, Cancel};
use crate::store::{self, NewOrder, Order, TimelineEntry};

/// Adds these operations to the service's OpenAPI document.
pub fn describe(api: &mut OpenApi) {
    api.operation(
        "post",
        "/orders",
        "Place an order; it answers at once, PENDING",
    )
    .idempotency_key(false, "the same key and body return the same order")
    .body::<PlaceOrder>()
    .response::<OrderView>(202, "the order, PENDING")
    .response::<OrderView>(200, "the order an earlier request with this key placed")
    .errors(&[400, 409, 413, 415, 422])
    .add();
    api.operation(
        "get",
        "/orders/{id}",
        "Show an order and its saga's timeline",
    )
    .param("id", Param::Uuid)
    .response::<OrderView>(200, "the order")
    .errors(&[404])
    .add();
    api.operation(
        "post",
        "/orders/{id}/cancel",
        "Cancel a PENDING or CONFIRMED order",
    )
    .param("id", Param::Uuid)
    .response::<OrderView>(200, "the order, CANCELLED")
    .errors(&[404, 409])
    .add();
}

pub fn router() -> Router<State> {
    Router::new()
        .route("/orders", post(place))
        .route("/orders/{id}", get(show))
        .route("/orders/{id}/cancel", post(cancel))
}

/// An order to place. Each product may appear on one line only (422 `duplicate_product`),
/// a rule JSON Schema cannot say of a list of objects; the document says it in words.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PlaceOrder {
    #[serde(deserialize_with = "kit::http::whole")]
    #[schemars(range(min = 1, max = i64::MAX))]
    user_id: i64,
    /// One line per product, each product at most once.
    #[schemars(length(min = 1, max = domain::MAX_LINES))]
    items: Vec<RequestedItem>,
    #[serde(default, deserialize_with = "kit::http::whole_opt")]
    #[schemars(range(min = 1, max = i64::MAX))]
    coupon_id: Option<i64>,
}

/// One line of an order to place.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RequestedItem {
    #[serde(deserialize_with = "kit::http::whole")]
    #[schemars(range(min = 1, max = i64::MAX))]
    product_id: i64,
    #[serde(deserialize_with = "kit::http::whole")]
    #[schemars(range(min = 1, max = domain::MAX_QUANTITY))]
    quantity: i64,
}

/// An order as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OrderView {
    order_id: Uuid,
    user_id: i64,
    status: Status,
    items: Vec<OrderLine>,
    total_amount: i64,
    discount_amount: i64,
    final_amount: i64,
    coupon_id: Option<i64>,
    cancel_reason: Option<String>,
    cancel_detail: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    timeline: Vec<TimelineView>,
}

impl OrderView {
    /// The order `created` describes, as it stands when placed: PENDING, with nothing but its
    /// creation on its timeline. `GET /orders/{id}` shows the same until the saga moves on.
    fn placed(created: &OrderCreated) -> Self {
        OrderView {
            order_id: created.order_id,
            user_id: created.user_id,
            status: Status::Pending,
            items: created.items.clone(),
            total_amount: created.total_amount,
            discount_amount: 0,
            final_amount: created.total_amount,
            coupon_id: created.coupon_id,
            cancel_reason: None,
            cancel_detail: None,
            created_at: created.created_at,
            updated_at: created.created_at,
            timeline: vec![TimelineView {
                at: created.created_at,
                event: "OrderCreated".to_owned(),
                detail: None,
            }],
        }
    }
}

/// One step of an order's saga.
#[derive(Debug, Serialize, JsonSchema)]
struct TimelineView {
    at: DateTime<Utc>,
    event: String,
    detail: Option<String>,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

async fn view(conn: &mut Conn, order: Order) -> Result<OrderView, sqlx::Error> {
    let id = order.id.to_string();
    let items = store::order_lines(conn, &id).await?;
    let timeline = store::timeline(conn, &id)
        .await?
        .into_iter()
        .map(|TimelineEntry { at, event, detail }| TimelineView {
            at: time(at),
            event,
            detail,
        })
        .collect();
    Ok(OrderView {
        order_id: order.id,
        user_id: order.user_id,
        status: order.status,
        items,
        total_amount: order.total_amount,
        discount_amount: order.discount_amount,
        final_amount: order.total_amount - order.discount_amount,
        coupon_id: order.coupon_id,
        cancel_reason: order.cancel_reason,
        cancel_detail: order.cancel_detail,
        created_at: time(order.created_at),
        updated_at: time(order.updated_at),
        timeline,
    })
}

/// The SHA-256 of the request as parsed, so that formatting differences do not matter.
fn request_hash(request: &PlaceOrder) -> String {
    let canonical = serde_json::to_vec(request).expect("a parsed request always serializes");
    hex::encode(Sha256::digest(canonical))
}

async fn place(
    Extract(state): Extract<State>,
    RequestTrace(trace): RequestTrace,
    committing: Committing,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PlaceOrder>,
) -> Result<Response, ApiError> {
    let key = kit::http::idempotency_key(&headers)?;
    let lines: Vec<(i64, i64)> = request
        .items
        .iter()
        .map(|i| (i.product_id, i.quantity))
        .collect();
    domain::validate_request(request.user_id, &lines, request.coupon_id)
        .map_err(|invalid| ApiError::new(invalid.code, invalid.message))?;
    let hash = request_hash(&request);

    let mut tx = kit::db::begin(&state.db).await?;
    let order_id = Uuid::now_v7();
    if let Some(key) = &key
        && !store::claim_idempotency_key(&mut tx, key, &hash, &order_id.to_string()).await?
    {
        tx.rollback().await?;
        return replay(&state, key, &hash).await;
    }
    let priced = price_lines(&mut tx, &request.items).await?;
    if let Some(coupon_id) = request.coupon_id {
        check_coupon(&mut tx, coupon_id, request.user_id).await?;
    }
    let total_amount = priced
        .iter()
        .try_fold(0i64, |sum, l| {
            l.quantity
                .checked_mul(l.unit_price)
                .and_then(|x| sum.checked_add(x))
        })
        .ok_or_else(|| ApiError::new(OrderCode::TotalTooLarge, "the order's total is too large"))?;
    let created_at = now_ms();
    let timeout_ms = i64::try_from(state.saga_timeout.as_millis()).unwrap_or(i64::MAX);
    let id = order_id.to_string();
    let traceparent = trace.header();
    store::insert_order(
        &mut tx,
        &NewOrder {
            id: &id,
            user_id: request.user_id,
            lines: &priced,
            total_amount,
            coupon_id: request.coupon_id,
            traceparent: &traceparent,
            deadline_at: created_at.saturating_add(timeout_ms),
            created_at,
        },
    )
    .await?;
    let event = OrderCreated {
        order_id,
        user_id: request.user_id,
        items: priced,
        total_amount,
        coupon_id: request.coupon_id,
        created_at: time(created_at),
    };
    // The answer is what this transaction wrote, so it is built from that rather than read
    // back: three statements fewer on the path every order takes.
    let body = OrderView::placed(&event);
    eventing::outbox::enqueue(
        &mut tx,
        &contract::Envelope::new(crate::SERVICE, event, None),
        &trace,
    )
    .await?;
    // Once the commit is sent, the request's time limit no longer abandons it: an order that
    // was kept is never answered "try again".
    kit::http::commit(tx, &committing).await?;
    state.outbox.wake();
    tracing::info!(%order_id, total_amount, "order placed");
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Answers a request whose idempotency key was used before: the same order for the same
/// request, 422 for another.
async fn replay(state: &State, key: &str, hash: &str) -> Result<Response, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (stored_hash, order_id) = store::find_idempotency_key(&mut conn, key)
        .await?
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "idempotency key {key} claimed but not found"
            ))
        })?;
    if stored_hash != hash {
        return Err(ApiError::new(
            OrderCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different request; use a new key for a new order",
        ));
    }
    let order = store::find_order(&mut conn, &order_id)
        .await?
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "order {order_id} of an idempotency key is missing"
            ))
        })?;
    let body = view(&mut conn, order).await?;
    Ok((
        StatusCode::OK,
        [("idempotent-replayed", "true")],
        Json(body),
    )
        .into_response())
}

/// Prices each line from the catalog replica; 422 naming every product it does not have.
async fn price_lines(conn: &mut Conn, items: &[RequestedItem]) -> Result<Vec<OrderLine>, ApiError> {
    let mut priced = Vec::with_capacity(items.len());
    let mut unknown = Vec::new();
    for item in items {
        match store::find_catalog_product(conn, item.product_id).await? {
            Some(product) => priced.push(OrderLine {
                product_id: item.product_id,
                quantity: item.quantity,
                unit_price: product.price,
            }),
            None => unknown.push(item.product_id.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::new(
            OrderCode::UnknownProduct,
            format!("no such product: {}", unknown.join(", ")),
        ));
    }
    Ok(priced)
}

/// Refuses at once a coupon this service already knows cannot work: one held by a live
/// order, or one the coupon service applied to another user's order. Anything else the
/// coupon service decides, and a refusal cancels the order with reason COUPON_REJECTED.
async fn check_coupon(conn: &mut Conn, coupon_id: i64, user_id: i64) -> Result<(), ApiError> {
    if store::coupon_owned_by_other(conn, coupon_id, user_id).await? {
        return Err(ApiError::new(
            OrderCode::CouponNotOwned,
            format!("coupon {coupon_id} belongs to another user"),
        ));
    }
    if store::coupon_in_use(conn, coupon_id).await? {
        return Err(ApiError::new(
            OrderCode::CouponInUse,
            format!("coupon {coupon_id} is already used by another order"),
        ));
    }
    Ok(())
}

fn order_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::new(OrderCode::OrderNotFound, format!("no order has id {raw}")))
}

async fn show(
    Extract(state): Extract<State>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id = order_id(&raw)?;
    let mut conn = state.db.acquire().await?;
    let order = store::find_order(&mut conn, &id.to_string())
        .await?
        .ok_or_else(|| ApiError::new(OrderCode::OrderNotFound, format!("no order has id {raw}")))?;
    Ok(Json(view(&mut conn, order).await?))
}

async fn cancel(
    Extract(state): Extract<State>,
    RequestTrace(trace): RequestTrace,
    committing: Committing,
    headers: HeaderMap,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<OrderView>, ApiError> {
    let id = order_id(&raw)?;
    let mut tx = kit::db::begin(&state.db).await?;
    // Continue the order's own trace, unless the caller sent a trace of its own: in a span
    // of the order's trace, whose context the cancellation's events carry.
    let trace = if headers.contains_key(contract::topics::HEADER_TRACEPARENT) {
        trace
    } else {
        match store::find_order(&mut tx, &id.to_string()).await? {
            Some(order) => {
                let span = tracing::info_span!(parent: None, "cancel order", order_id = %id);
                kit::trace::continue_in(&span, TraceContext::parse(&order.traceparent))
            }
            None => trace,
        }
    };
    let outcome = saga::cancel(
        &mut tx,
        id,
        CancelReason::UserCancelled,
        "cancelled at the customer's request",
        None,
        &trace,
    )
    .await?;
    match outcome {
        Cancel::Cancelled(order) => {
            let ended = saga::Ended::cancelled(&order);
            let body = view(&mut tx, order).await?;
            kit::http::commit(tx, &committing).await?;
            ended.observe(&state.metrics);
            state.outbox.wake();
            Ok(Json(body))
        }
        Cancel::NotCancellable(status) => Err(ApiError::new(
            OrderCode::OrderAlreadyCancelled,
            format!(
                "the order is {} and cannot be cancelled again",
                status.as_str()
            ),
        )),
        Cancel::NotFound => Err(ApiError::new(
            OrderCode::OrderNotFound,
            format!("no order has id {raw}"),
        )),
    }
}
