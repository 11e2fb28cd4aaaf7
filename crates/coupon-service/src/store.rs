//! Every SQL statement of the coupon service.

use kit::{Conn, now_ms};
use sqlx::Row;

use crate::domain::Kind;

/// A coupon row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    pub id: i64,
    pub user_id: i64,
    pub kind: Kind,
    pub value: i64,
    pub expires_at: Option<i64>,
    pub used_by_order: Option<String>,
}

const COLUMNS: &str = "id, user_id, kind, value, expires_at, used_by_order";

fn coupon(row: &sqlx::any::AnyRow) -> Result<Coupon, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(Coupon {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        kind: Kind::parse(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown coupon kind {kind}").into()))?,
        value: row.try_get("value")?,
        expires_at: row.try_get("expires_at")?,
        used_by_order: row.try_get("used_by_order")?,
    })
}

pub async fn insert_coupon(
    conn: &mut Conn,
    user_id: i64,
    kind: Kind,
    value: i64,
    expires_at: Option<i64>,
) -> Result<Coupon, sqlx::Error> {
    let row = sqlx::query(&format!(
        "INSERT INTO coupon (user_id, kind, value, expires_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) RETURNING {COLUMNS}"
    ))
    .bind(user_id)
    .bind(kind.as_str())
    .bind(value)
    .bind(expires_at)
    .bind(now_ms())
    .fetch_one(conn)
    .await?;
    coupon(&row)
}

pub async fn find_coupon(conn: &mut Conn, id: i64) -> Result<Option<Coupon>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM coupon WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(coupon).transpose()
}

/// Marks the coupon used by `order_id` if it is the user's, unused and unexpired at `now`;
/// `None` otherwise. Two orders racing for one coupon: the second waits for the first's row
/// lock, then finds it used.
pub async fn use_coupon(
    conn: &mut Conn,
    coupon_id: i64,
    user_id: i64,
    order_id: &str,
    now: i64,
) -> Result<Option<Coupon>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE coupon SET used_by_order = $1, updated_at = $2 \
         WHERE id = $3 AND user_id = $4 AND used_by_order IS NULL \
         AND (expires_at IS NULL OR expires_at > $2) RETURNING {COLUMNS}"
    ))
    .bind(order_id)
    .bind(now)
    .bind(coupon_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(coupon).transpose()
}

/// Makes the coupon available again if `order_id` is the order using it.
pub async fn unuse_coupon(
    conn: &mut Conn,
    coupon_id: i64,
    order_id: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE coupon SET used_by_order = NULL, updated_at = $1 WHERE id = $2 AND used_by_order = $3",
    )
    .bind(now_ms())
    .bind(coupon_id)
    .bind(order_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Takes the decision slot of an order; `false` when this service decided for it before.
pub async fn claim_use(
    conn: &mut Conn,
    order_id: &str,
    coupon_id: Option<i64>,
    status: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO coupon_use (order_id, coupon_id, status, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(coupon_id)
    .bind(status)
    .bind(now_ms())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn set_use_status(
    conn: &mut Conn,
    order_id: &str,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE coupon_use SET status = $1, updated_at = $2 WHERE order_id = $3")
        .bind(status)
        .bind(now_ms())
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks an APPLIED use RELEASED and returns its coupon; `None` when the order holds no
/// coupon (none asked, refused, or already released).
pub async fn release_use(conn: &mut Conn, order_id: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE coupon_use SET status = 'RELEASED', updated_at = $1 \
         WHERE order_id = $2 AND status = 'APPLIED' RETURNING coupon_id",
    )
    .bind(now_ms())
    .bind(order_id)
    .fetch_optional(conn)
    .await
}
