//! The reconciliation sweep: a coupon marked used by an order must be held by that order's
//! APPLIED use; a coupon that is not (its order's use was released, refused, or never
//! recorded) is made available again, and each repair is logged and counted. By construction
//! the two change together; the sweep keeps a drift (a manual edit, a bug) from locking a
//! customer's coupon forever.

use std::time::Duration;

use kit::metrics::Counter;
use kit::{Db, now_ms};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

const ORPHANED: &str = "used_by_order IS NOT NULL AND NOT EXISTS (SELECT 1 FROM coupon_use u \
     WHERE u.order_id = coupon.used_by_order AND u.status = 'APPLIED')";

/// Makes every coupon held by no applied use available again; returns `(coupon, order)` of
/// each repair.
pub async fn sweep(db: &Db) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT id, used_by_order FROM coupon WHERE {ORPHANED}"
    ))
    .fetch_all(db)
    .await?;
    let mut repairs = Vec::new();
    for row in rows {
        let (coupon_id, order_id): (i64, String) =
            (row.try_get("id")?, row.try_get("used_by_order")?);
        let released = sqlx::query(&format!(
            "UPDATE coupon SET used_by_order = NULL, updated_at = $1 WHERE id = $2 AND used_by_order = $3 AND {ORPHANED}"
        ))
        .bind(now_ms())
        .bind(coupon_id)
        .bind(&order_id)
        .execute(db)
        .await?
        .rows_affected();
        if released == 1 {
            tracing::error!(coupon_id, %order_id, "a coupon was held by no applied use; made it available");
            repairs.push((coupon_id, order_id));
        }
    }
    Ok(repairs)
}

/// The kind of repair this sweep makes, as `reconciliation_repairs_total` labels it.
pub const KIND: &str = "orphaned_coupon";

/// Sweeps every `interval` until `shutdown`, adding its repairs to `repairs`.
pub async fn run(db: Db, repairs: Counter, interval: Duration, shutdown: CancellationToken) {
    let sweep = || async { sweep(&db).await.map(|repairs| repairs.len()) };
    kit::app::reconcile_every(KIND, interval, repairs, shutdown, sweep).await;
}
