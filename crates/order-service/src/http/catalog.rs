//! `GET /catalog/{product_id}`: the product as this service's replica knows it.

use axum::extract::State as Extract;
use axum::routing::get;
use axum::{Json, Router};
use kit::openapi::{OpenApi, Param};
use kit::{ApiError, ApiPath};

use super::State;
use crate::error_code::OrderCode;
use crate::store::{self, CatalogProduct};

/// Adds these operations to the service's OpenAPI document.
pub fn describe(api: &mut OpenApi) {
    api.operation(
        "get",
        "/catalog/{product_id}",
        "Show a product of the catalog replica",
    )
    .param("product_id", Param::Integer)
    .response::<CatalogProduct>(200, "the product as this service prices it")
    .errors(&[404])
    .add();
}

pub fn router() -> Router<State> {
    Router::new().route("/catalog/{product_id}", get(show))
}

async fn show(
    Extract(state): Extract<State>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<CatalogProduct>, ApiError> {
    let mut conn = state.db.acquire().await?;
    store::find_catalog_product(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                OrderCode::ProductNotInCatalog,
                format!("product {id} is not in the catalog (yet)"),
            )
        })
}
