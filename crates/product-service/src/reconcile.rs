//! The reconciliation sweep: checks that every product's `reserved` equals what its RESERVED
//! reservations hold, and repairs a product where it does not (keeping `available + reserved`
//! as it was), logging and counting each repair. By construction the two never drift, since
//! both change in the same transaction; the sweep is there so that if they ever do (a manual
//! edit, a bug), the stock does not stay wrong silently.

use std::time::Duration;

use kit::metrics::Counter;
use kit::{Db, now_ms};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

/// One product repaired: its id, the `reserved` it had, and what its reservations hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repair {
    pub product_id: i64,
    pub was_reserved: i64,
    pub held: i64,
}

/// Finds and repairs every product whose `reserved` differs from what its reservations hold.
pub async fn sweep(db: &Db) -> Result<Vec<Repair>, sqlx::Error> {
    let rows = sqlx::query(
        // SUM of BIGINT is NUMERIC on Postgres; the cast keeps it an integer on both backends.
        "SELECT p.id, p.reserved, CAST(COALESCE((SELECT SUM(l.quantity) FROM reservation_line l \
         JOIN reservation r ON r.order_id = l.order_id \
         WHERE r.status = 'RESERVED' AND l.product_id = p.id), 0) AS BIGINT) AS held FROM product p",
    )
    .fetch_all(db)
    .await?;
    let mut repairs = Vec::new();
    for row in rows {
        let (product_id, was_reserved, held): (i64, i64, i64) = (
            row.try_get("id")?,
            row.try_get("reserved")?,
            row.try_get("held")?,
        );
        if was_reserved == held {
            continue;
        }
        // Only if nothing changed the product since it was read, and never below zero.
        let repaired = sqlx::query(
            "UPDATE product SET available = available + ($1 - $2), reserved = $2, updated_at = $3 \
             WHERE id = $4 AND reserved = $1 AND available + ($1 - $2) >= 0",
        )
        .bind(was_reserved)
        .bind(held)
        .bind(now_ms())
        .bind(product_id)
        .execute(db)
        .await?
        .rows_affected();
        if repaired == 1 {
            tracing::error!(
                product_id,
                was_reserved,
                held,
                "reserved stock did not match its reservations; repaired"
            );
            repairs.push(Repair {
                product_id,
                was_reserved,
                held,
            });
        }
    }
    Ok(repairs)
}

/// The kind of repair this sweep makes, as `reconciliation_repairs_total` labels it.
pub const KIND: &str = "reserved_stock";

/// Sweeps every `interval` until `shutdown`, adding its repairs to `repairs`.
pub async fn run(db: Db, repairs: Counter, interval: Duration, shutdown: CancellationToken) {
    let sweep = || async { sweep(&db).await.map(|repairs| repairs.len()) };
    kit::app::reconcile_every(KIND, interval, repairs, shutdown, sweep).await;
}
