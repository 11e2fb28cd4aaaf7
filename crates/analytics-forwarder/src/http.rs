//! The forwarder's one endpoint beside health and metrics: `POST /deliveries/retry
//! {event_id?}` makes FAILED deliveries (all, or one) PENDING again with a fresh retry budget,
//! once whatever made them fail is fixed. `shopctl dlq replay analytics-forwarder` calls it.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use eventing::{ApiError, ApiJson, Db, Outbox};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store;

#[derive(Clone)]
struct Deliveries {
    db: Db,
    wake: Outbox,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retry {
    #[serde(default)]
    event_id: Option<String>,
}

pub fn router(db: Db, wake: Outbox) -> Router {
    Router::new()
        .route("/deliveries/retry", post(retry))
        .with_state(Deliveries { db, wake })
}

async fn retry(
    State(deliveries): State<Deliveries>,
    ApiJson(retry): ApiJson<Retry>,
) -> Result<Json<Value>, ApiError> {
    let reset = store::retry_failed(&deliveries.db, retry.event_id.as_deref()).await?;
    if reset > 0 {
        deliveries.wake.wake();
    }
    tracing::info!(reset, "failed deliveries made pending again");
    Ok(Json(json!({ "reset": reset })))
}
