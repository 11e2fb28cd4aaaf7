//! The product API. Every change to a product publishes `ProductUpserted` in the same
//! transaction, so the order service's catalog can never miss a product or a price.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::ProductUpserted;
use eventing::outbox::{self, Outbox};
use kit::openapi::{OpenApi, Param};
use kit::{ApiError, ApiJson, ApiPath, Db, RequestTrace, TraceContext};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::SERVICE;
use crate::error_code::ProductCode;
use crate::store::{self, Product};

/// Largest stock or restock quantity accepted in one request.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// Largest price accepted, in minor units.
pub const MAX_PRICE: i64 = 1_000_000_000_000;
/// Longest product name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// What [`valid_name`] checks, as a JSON Schema pattern for the OpenAPI document: no control
/// character (`char::is_control`: U+0000 to U+001F and U+007F to U+009F) anywhere, and at least
/// one character that is neither a control character nor white space (`char::is_whitespace`),
/// the characters spelled out because `\s` means other things in other regex dialects.
pub const NAME_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// A product name is 1 to 200 characters as sent, none of them a control character (NUL above
/// all, which Postgres cannot store in text), and not only white space. It is stored trimmed.
pub fn valid_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars)
        && !name.chars().any(char::is_control)
        && !name.trim().is_empty()
}

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    pub db: Db,
    pub outbox: Outbox,
    /// What creating and restocking products need.
    pub admin: kit::admin::AdminToken,
}

/// The API's operations, for `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut api = OpenApi::new(
        crate::SERVICE,
        "Products, stock and reservations of the order saga.",
    );
    api.operation("post", "/products", "Create a product (operator)")
        .admin()
        .body::<NewProduct>()
        .response::<Product>(201, "the product")
        .errors(&[400, 413, 415, 422])
        .add();
    api.operation("get", "/products/{id}", "Show a product and its stock")
        .param("id", Param::Integer)
        .response::<Product>(200, "the product")
        .errors(&[404])
        .add();
    api.operation(
        "post",
        "/products/{id}/restock",
        "Add stock to a product (operator)",
    )
    .admin()
    .param("id", Param::Integer)
    .body::<Restock>()
    .response::<Product>(200, "the product")
    .errors(&[400, 404, 413, 415, 422])
    .add();
    api.document()
}

pub fn router(state: State) -> Router {
    // Creating a product and restocking one change the catalog and the stock outside any
    // order: an operator's acts. Open, they would let anyone list a product at price 0 with a
    // billion units.
    let operator = kit::admin::guard(
        Router::new()
            .route("/products", post(create))
            .route("/products/{id}/restock", post(restock)),
        state.admin.clone(),
    );
    Router::new()
        .route("/products/{id}", get(show))
        .merge(operator)
        .with_state(state)
        .merge(kit::openapi::route(openapi()))
}

/// A product to create.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewProduct {
    /// Stored with white space trimmed from both ends.
    #[schemars(length(min = 1, max = MAX_NAME_CHARS), regex(pattern = NAME_PATTERN))]
    name: String,
    /// In minor units.
    #[serde(deserialize_with = "kit::http::whole")]
    #[schemars(range(min = 0, max = MAX_PRICE))]
    price: i64,
    #[serde(deserialize_with = "kit::http::whole")]
    #[schemars(range(min = 0, max = MAX_QUANTITY))]
    stock: i64,
}

/// Units to add to a product's stock.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Restock {
    #[serde(deserialize_with = "kit::http::whole")]
    #[schemars(range(min = 1, max = MAX_QUANTITY))]
    quantity: i64,
}

async fn create(
    axum::extract::State(state): axum::extract::State<State>,
    RequestTrace(trace): RequestTrace,
    committing: kit::http::Committing,
    ApiJson(new): ApiJson<NewProduct>,
) -> Result<impl IntoResponse, ApiError> {
    if !valid_name(&new.name) {
        return Err(ApiError::new(
            ProductCode::InvalidName,
            format!(
                "name must be 1 to {MAX_NAME_CHARS} characters, not all white space, none of them control characters"
            ),
        ));
    }
    let name = new.name.trim();
    if !(0..=MAX_PRICE).contains(&new.price) {
        return Err(ApiError::new(
            ProductCode::InvalidPrice,
            format!("price must be 0 to {MAX_PRICE} minor units"),
        ));
    }
    if !(0..=MAX_QUANTITY).contains(&new.stock) {
        return Err(ApiError::new(
            ProductCode::InvalidStock,
            format!("stock must be 0 to {MAX_QUANTITY}"),
        ));
    }
    let mut tx = kit::db::begin(&state.db).await?;
    let product = store::insert_product(&mut tx, name, new.price, new.stock).await?;
    publish_upsert(&mut tx, &product, &trace).await?;
    kit::http::commit(tx, &committing).await?;
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
    committing: kit::http::Committing,
    ApiPath(id): ApiPath<i64>,
    ApiJson(restock): ApiJson<Restock>,
) -> Result<Json<Product>, ApiError> {
    if !(1..=MAX_QUANTITY).contains(&restock.quantity) {
        return Err(ApiError::new(
            ProductCode::InvalidQuantity,
            format!("quantity must be 1 to {MAX_QUANTITY}"),
        ));
    }
    let mut conn = state.db.acquire().await?;
    // One statement that writes: once sent, the request is not abandoned at its time limit.
    committing.start();
    let product = store::restock(&mut conn, id, restock.quantity)
        .await?
        .ok_or_else(|| no_such_product(id))?;
    tracing::info!(product_id = id, quantity = restock.quantity, "restocked");
    Ok(Json(product))
}

async fn publish_upsert(
    conn: &mut kit::Conn,
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
        ProductCode::ProductNotFound,
        format!("no product has id {id}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_name_pattern_accepts_exactly_the_names_the_handler_accepts() {
        let pattern = regex::Regex::new(NAME_PATTERN).expect("the pattern compiles");
        let long = "x".repeat(MAX_NAME_CHARS);
        let names = [
            "Mug",
            " Mug ",
            "Tea\u{a0}pot",
            "\u{feff}",
            "커피",
            "a\tb",
            "a\u{0}b",
            "\u{85}x",
            "",
            " ",
            "\u{3000}",
            "\u{2028}x\u{2029}",
            "x\u{7f}",
            "\u{9f}",
            "\u{a0}\u{a0}",
            &long,
        ];
        for name in names {
            let by_pattern =
                pattern.is_match(name) && (1..=MAX_NAME_CHARS).contains(&name.chars().count());
            assert_eq!(by_pattern, valid_name(name), "{name:?}");
        }
        assert!(!valid_name(&format!("{long}x")));
    }

    #[test]
    fn the_document_states_every_bound_the_handlers_check() {
        let doc = openapi();
        let product = &doc["components"]["schemas"]["NewProduct"]["properties"];
        assert_eq!(product["name"]["maxLength"], MAX_NAME_CHARS);
        assert_eq!(product["name"]["pattern"], NAME_PATTERN);
        assert_eq!(product["price"]["maximum"], MAX_PRICE);
        assert_eq!(product["stock"]["minimum"], 0);
        let restock = &doc["components"]["schemas"]["Restock"]["properties"];
        assert_eq!(restock["quantity"]["minimum"], 1);
        assert_eq!(restock["quantity"]["maximum"], MAX_QUANTITY);
    }
}
