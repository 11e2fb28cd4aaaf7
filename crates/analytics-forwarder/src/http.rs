//! The forwarder's one endpoint beside health and metrics: `POST /deliveries/retry
//! {event_id?}` makes FAILED deliveries (all, or one) PENDING again with a fresh retry budget,
//! once whatever made them fail is fixed. `shopctl dlq replay analytics-forwarder` calls it.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use kit::openapi::OpenApi;
use kit::wake::Wake;
use kit::{ApiError, ApiJson, Db};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store;

#[derive(Clone)]
struct Deliveries {
    db: Db,
    wake: Wake,
}

/// Which failed deliveries to retry: one event's, or all when absent.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Retry {
    #[serde(default)]
    event_id: Option<uuid::Uuid>,
}

/// How many deliveries were made pending again.
#[derive(Debug, Serialize, JsonSchema)]
struct Retried {
    reset: u64,
}

/// The API's operations, for `/openapi.json`.
pub fn openapi() -> Value {
    let mut api = OpenApi::new(
        crate::SERVICE,
        "Forwards order events to the data platform; health, metrics and retries.",
    );
    api.operation(
        "post",
        "/deliveries/retry",
        "Retry failed deliveries (operator)",
    )
    .admin()
    .body::<Retry>()
    .response::<Retried>(200, "how many deliveries are pending again")
    .errors(&[400, 413, 415, 422])
    .add();
    api.document()
}

pub fn router(db: Db, wake: Wake, admin: kit::admin::AdminToken) -> Router {
    kit::admin::guard(Router::new().route("/deliveries/retry", post(retry)), admin)
        .with_state(Deliveries { db, wake })
        .merge(kit::openapi::route(openapi()))
}

async fn retry(
    State(deliveries): State<Deliveries>,
    ApiJson(retry): ApiJson<Retry>,
) -> Result<Json<Retried>, ApiError> {
    let reset = store::retry_failed(
        &deliveries.db,
        retry.event_id.map(|id| id.to_string()).as_deref(),
    )
    .await?;
    if reset > 0 {
        deliveries.wake.wake();
    }
    tracing::info!(reset, "failed deliveries made pending again");
    Ok(Json(Retried { reset }))
}
