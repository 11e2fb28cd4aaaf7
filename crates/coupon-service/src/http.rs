//! The coupon API. Coupons are created here; they are used and restored only by events.

use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use kit::openapi::{OpenApi, Param};
use kit::{ApiError, ApiJson, ApiPath, Db, now_ms};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{self, Kind, Status};
use crate::error_code::CouponCode;
use crate::store::{self, Coupon};

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    pub db: Db,
    /// What creating a coupon needs.
    pub admin: kit::admin::AdminToken,
}

/// The API's operations, for `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut api = OpenApi::new(crate::SERVICE, "Single-use coupons of the order saga.");
    api.operation("post", "/coupons", "Create a coupon (operator)")
        .admin()
        .body::<NewCoupon>()
        .response::<CouponView>(201, "the coupon")
        .errors(&[400, 413, 415, 422])
        .add();
    api.operation("get", "/coupons/{id}", "Show a coupon")
        .param("id", Param::Integer)
        .response::<CouponView>(200, "the coupon")
        .errors(&[404])
        .add();
    api.document()
}

pub fn router(state: State) -> Router {
    // Creating a coupon grants a discount: an operator's act. Open, it would let anyone mint a
    // 100 % coupon for any user.
    let operator = kit::admin::guard(
        Router::new().route("/coupons", post(create)),
        state.admin.clone(),
    );
    Router::new()
        .route("/coupons/{id}", get(show))
        .merge(operator)
        .with_state(state)
        .merge(kit::openapi::route(openapi()))
}

/// A coupon to create. A FIXED coupon's value is 1 to 10^12 minor units, a PERCENT coupon's
/// 1 to 100: the range depends on the kind, which the schema says with a `oneOf`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = value_range_by_kind)]
struct NewCoupon {
    #[serde(deserialize_with = "kit::http::whole")]
    #[schemars(range(min = 1, max = i64::MAX))]
    user_id: i64,
    kind: Kind,
    #[serde(deserialize_with = "kit::http::whole")]
    value: i64,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// Adds to `NewCoupon`'s schema one alternative per kind, each with that kind's value range
/// (from [`Kind::valid_values`], the rule the handler applies).
fn value_range_by_kind(schema: &mut schemars::Schema) {
    let alternatives: Vec<serde_json::Value> = [Kind::Fixed, Kind::Percent]
        .into_iter()
        .map(|kind| {
            let range = kind.valid_values();
            serde_json::json!({
                "properties": {
                    "kind": { "const": kind.as_str() },
                    "value": { "minimum": range.start(), "maximum": range.end() },
                },
            })
        })
        .collect();
    schema.insert("oneOf".into(), alternatives.into());
}

/// A coupon as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
struct CouponView {
    coupon_id: i64,
    user_id: i64,
    kind: Kind,
    value: i64,
    expires_at: Option<DateTime<Utc>>,
    status: Status,
    used_by_order: Option<String>,
}

impl From<Coupon> for CouponView {
    fn from(c: Coupon) -> Self {
        CouponView {
            coupon_id: c.id,
            user_id: c.user_id,
            kind: c.kind,
            value: c.value,
            expires_at: c.expires_at.and_then(DateTime::from_timestamp_millis),
            status: domain::status(c.used_by_order.as_deref(), c.expires_at, now_ms()),
            used_by_order: c.used_by_order,
        }
    }
}

async fn create(
    Extract(state): Extract<State>,
    committing: kit::http::Committing,
    ApiJson(new): ApiJson<NewCoupon>,
) -> Result<impl IntoResponse, ApiError> {
    if new.user_id < 1 {
        return Err(ApiError::new(
            CouponCode::InvalidUserId,
            "user_id must be a positive integer",
        ));
    }
    let valid = new.kind.valid_values();
    if !valid.contains(&new.value) {
        return Err(ApiError::new(
            CouponCode::InvalidValue,
            format!(
                "a {} coupon's value must be {} to {}",
                new.kind.as_str(),
                valid.start(),
                valid.end()
            ),
        ));
    }
    let mut conn = state.db.acquire().await?;
    let expires_at = new.expires_at.map(|t| t.timestamp_millis());
    // One statement that writes: once sent, the request is not abandoned at its time limit.
    committing.start();
    let coupon =
        store::insert_coupon(&mut conn, new.user_id, new.kind, new.value, expires_at).await?;
    tracing::info!(coupon_id = coupon.id, "coupon created");
    Ok((StatusCode::CREATED, Json(CouponView::from(coupon))))
}

async fn show(
    Extract(state): Extract<State>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<CouponView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    store::find_coupon(&mut conn, id)
        .await?
        .map(|c| Json(c.into()))
        .ok_or_else(|| ApiError::new(CouponCode::CouponNotFound, format!("no coupon has id {id}")))
}
