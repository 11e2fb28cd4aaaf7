//! The order service's HTTP API: [`orders`] (place, read, cancel) and [`catalog`] (the
//! replica's view of a product, to see what orders will be priced at).

pub mod catalog;
pub mod orders;

use std::time::Duration;

use axum::Router;
use eventing::Outbox;
use kit::Db;

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    pub db: Db,
    pub outbox: Outbox,
    /// The service's registry: cancelling an order records its saga duration.
    pub metrics: crate::saga::SagaMetrics,
    /// How long an order may stay PENDING before it is cancelled with reason TIMEOUT.
    pub saga_timeout: Duration,
}

/// The API's operations, for `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut api = kit::openapi::OpenApi::new(
        crate::SERVICE,
        "Orders of the saga: placed at once, confirmed or cancelled by events.",
    );
    orders::describe(&mut api);
    catalog::describe(&mut api);
    api.document()
}

pub fn router(state: State) -> Router {
    orders::router()
        .merge(catalog::router())
        .with_state(state)
        .merge(kit::openapi::route(openapi()))
}
