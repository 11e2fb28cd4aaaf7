//! The product API. Every change to a product publishes `ProductUpserted` in the same
//! transaction, so the order service's catalog can never miss a product or a price.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::ProductUpserted;
use eventing::openapi::{OpenApi, Param};
use eventing::outbox::{self, Outbox};
use eventing::{ApiError, ApiJson, ApiPath, Db, ErrorCode, RequestTrace, TraceContext};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::SERVICE;
use crate::store::{self, Product};

/// Largest stock or restock quantity accepted in one request.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// Largest price accepted, in minor units.
pub const MAX_PRICE: i64 = 1_000_000_000_000;
/// Longest product name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    pub db: Db,
    pub outbox: Outbox,
}

/// The API's operations, for `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut api = OpenApi::new(
        "product-service",
        "Products, stock and reservations of the order saga.",
    );
    api.operation("post", "/products", "Create a product")
        .body::<NewProduct>()
        .response::<Product>(201, "the product")
        .errors(&[400, 413, 415, 422])
        .add();
    api.operation("get", "/products/{id}", "Show a product and its stock")
        .param("id", Param::Integer)
        .response::<Product>(200, "the product")
        .errors(&[404])
        .add();
    api.operation("post", "/products/{id}/restock", "Add stock to a product")
        .param("id", Param::Integer)
        .body::<Restock>()
        .response::<Product>(200, "the product")
        .errors(&[400, 404, 413, 415, 422])
        .add();
    api.document()
}

pub fn router(state: State) -> Router {
    Router::new()
        .route("/products", post(create))
        .route("/products/{id}", get(show))
        .route("/products/{id}/restock", post(restock))
        .with_state(state)
        .merge(eventing::openapi::route(openapi()))
}

/// A product to create.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewProduct {
    name: String,
    price: i64,
    stock: i64,
}

/// Units to add to a product's stock.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Restock {
    quantity: i64,
}

async fn create(
    axum::extract::State(state): axum::extract::State<State>,
    RequestTrace(trace): RequestTrace,
    ApiJson(new): ApiJson<NewProduct>,
) -> Result<impl IntoResponse, ApiError> {
    let name = new.name.trim();
    // Control characters (NUL above all, which Postgres cannot store in text) have no place
    // in a product name.
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidName,
            format!(
                "name must be 1 to {MAX_NAME_CHARS} characters, none of them control characters"
            ),
        ));
    }
    if !(0..=MAX_PRICE).contains(&new.price) {
        return Err(ApiError::new(
            ErrorCode::InvalidPrice,
            format!("price must be 0 to {MAX_PRICE} minor units"),
        ));
    }
    if !(0..=MAX_QUANTITY).contains(&new.stock) {
        return Err(ApiError::new(
            ErrorCode::InvalidStock,
            format!("stock must be 0 to {MAX_QUANTITY}"),
        ));
    }
    let mut tx = eventing::db::begin(&state.db).await?;
    let product = store::insert_product(&mut tx, name, new.price, new.stock).await?;
    publish_upsert(&mut tx, &product, &trace).await?;
    tx.commit().await?;
    state.outbox.wake();
    tracing::info!(product_id = product.product_id, "product created");
    Ok((StatusCode::CREATED, Json(product)))
}

async fn show(
    axum::extract::State(state): axum::extract::State<State>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Product>, ApiError> {
    let mut conn = state.db.acquire().await?;
    store::find_product(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| no_such_product(id))
}

async fn restock(
    axum::extract::State(state): axum::extract::State<State>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(restock): ApiJson<Restock>,
) -> Result<Json<Product>, ApiError> {
    if !(1..=MAX_QUANTITY).contains(&restock.quantity) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuantity,
            format!("quantity must be 1 to {MAX_QUANTITY}"),
        ));
    }
    let mut conn = state.db.acquire().await?;
    let product = store::restock(&mut conn, id, restock.quantity)
        .await?
        .ok_or_else(|| no_such_product(id))?;
    tracing::info!(product_id = id, quantity = restock.quantity, "restocked");
    Ok(Json(product))
}

async fn publish_upsert(
    conn: &mut eventing::Conn,
    product: &Product,
    trace: &TraceContext,
) -> Result<(), sqlx::Error> {
    let envelope = contract::Envelope::new(
        SERVICE,
        ProductUpserted {
            product_id: product.product_id,
            name: product.name.clone(),
            price: product.price,
        },
        None,
    );
    outbox::enqueue(conn, &envelope, trace).await
}

fn no_such_product(id: i64) -> ApiError {
    ApiError::new(
        ErrorCode::ProductNotFound,
        format!("no product has id {id}"),
    )
}
