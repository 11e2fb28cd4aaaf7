//! Every SQL statement of the order service.

use contract::{CancelReason, OrderLine};
use kit::{Conn, now_ms};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domain::{Progress, Status};

/// A product of the catalog replica.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct CatalogProduct {
    pub product_id: i64,
    pub name: String,
    pub price: i64,
}

/// Sets a catalog entry from an upsert of version `version` (its `occurred_at`, ms), unless
/// the entry is already of that version or a later one; `true` if it was set.
pub async fn upsert_catalog_product(
    conn: &mut Conn,
    product: &CatalogProduct,
    version: i64,
) -> Result<bool, sqlx::Error> {
    let set = sqlx::query(
        "INSERT INTO catalog_product (product_id, name, price, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (product_id) DO UPDATE SET name = excluded.name, price = excluded.price, \
         updated_at = excluded.updated_at, version = excluded.version \
         WHERE catalog_product.version < excluded.version",
    )
    .bind(product.product_id)
    .bind(&product.name)
    .bind(product.price)
    .bind(now_ms())
    .bind(version)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(set == 1)
}

pub async fn find_catalog_product(
    conn: &mut Conn,
    product_id: i64,
) -> Result<Option<CatalogProduct>, sqlx::Error> {
    let row =
        sqlx::query("SELECT product_id, name, price FROM catalog_product WHERE product_id = $1")
            .bind(product_id)
            .fetch_optional(conn)
            .await?;
    row.map(|row| {
        Ok(CatalogProduct {
            product_id: row.try_get("product_id")?,
            name: row.try_get("name")?,
            price: row.try_get("price")?,
        })
    })
    .transpose()
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: uuid::Uuid,
    pub user_id: i64,
    pub status: Status,
    pub total_amount: i64,
    pub discount_amount: i64,
    pub coupon_id: Option<i64>,
    pub stock_reserved: bool,
    pub coupon_applied: bool,
    pub cancel_reason: Option<String>,
    pub cancel_detail: Option<String>,
    pub traceparent: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Order {
    pub fn progress(&self) -> Progress {
        Progress {
            status: self.status,
            has_coupon: self.coupon_id.is_some(),
            stock_reserved: self.stock_reserved,
            coupon_applied: self.coupon_applied,
        }
    }
}

const ORDER_COLUMNS: &str = "id, user_id, status, total_amount, discount_amount, coupon_id, \
    stock_reserved, coupon_applied, cancel_reason, cancel_detail, traceparent, created_at, updated_at";

fn order(row: &AnyRow) -> Result<Order, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let id: String = row.try_get("id")?;
    Ok(Order {
        id: uuid::Uuid::parse_str(&id)
            .map_err(|e| sqlx::Error::Decode(format!("order id {id}: {e}").into()))?,
        user_id: row.try_get("user_id")?,
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown order status {status}").into()))?,
        total_amount: row.try_get("total_amount")?,
        discount_amount: row.try_get("discount_amount")?,
        coupon_id: row.try_get("coupon_id")?,
        stock_reserved: row.try_get::<i64, _>("stock_reserved")? == 1,
        coupon_applied: row.try_get::<i64, _>("coupon_applied")? == 1,
        cancel_reason: row.try_get("cancel_reason")?,
        cancel_detail: row.try_get("cancel_detail")?,
        traceparent: row.try_get("traceparent")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A new order and its lines, PENDING, with `OrderCreated` as its first timeline entry.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub id: &'a str,
    pub user_id: i64,
    pub lines: &'a [OrderLine],
    pub total_amount: i64,
    pub coupon_id: Option<i64>,
    pub traceparent: &'a str,
    pub deadline_at: i64,
    pub created_at: i64,
}

pub async fn insert_order(conn: &mut Conn, new: &NewOrder<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO customer_order (id, user_id, status, total_amount, discount_amount, coupon_id, \
         stock_reserved, coupon_applied, traceparent, deadline_at, created_at, updated_at) \
         VALUES ($1, $2, 'PENDING', $3, 0, $4, 0, 0, $5, $6, $7, $7)",
    )
    .bind(new.id)
    .bind(new.user_id)
    .bind(new.total_amount)
    .bind(new.coupon_id)
    .bind(new.traceparent)
    .bind(new.deadline_at)
    .bind(new.created_at)
    .execute(&mut *conn)
    .await?;
    for (line_no, line) in new.lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO order_line (order_id, line_no, product_id, quantity, unit_price) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new.id)
        .bind(line_no as i64)
        .bind(line.product_id)
        .bind(line.quantity)
        .bind(line.unit_price)
        .execute(&mut *conn)
        .await?;
    }
    add_timeline_at(conn, new.id, new.created_at, "OrderCreated", None).await
}

pub async fn find_order(conn: &mut Conn, id: &str) -> Result<Option<Order>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {ORDER_COLUMNS} FROM customer_order WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(order).transpose()
}

pub async fn order_lines(conn: &mut Conn, id: &str) -> Result<Vec<OrderLine>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT product_id, quantity, unit_price FROM order_line WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(OrderLine {
                product_id: row.try_get("product_id")?,
                quantity: row.try_get("quantity")?,
                unit_price: row.try_get("unit_price")?,
            })
        })
        .collect()
}

/// Records that stock was reserved and returns the order as it now stands, its row locked
/// by this transaction; `None` for an unknown order.
pub async fn mark_stock_reserved(conn: &mut Conn, id: &str) -> Result<Option<Order>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE customer_order SET stock_reserved = 1, updated_at = $1 WHERE id = $2 RETURNING {ORDER_COLUMNS}"
    ))
    .bind(now_ms())
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(order).transpose()
}

/// Records that the coupon was applied with its discount, if the order is still PENDING
/// (a cancelled order keeps the amounts it had), and returns the order as it now stands,
/// its row locked by this transaction; `None` for an unknown order.
pub async fn mark_coupon_applied(
    conn: &mut Conn,
    id: &str,
    discount_amount: i64,
) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query(
        "UPDATE customer_order SET coupon_applied = 1, discount_amount = $1, updated_at = $2 \
         WHERE id = $3 AND status = 'PENDING'",
    )
    .bind(discount_amount)
    .bind(now_ms())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    lock_order(conn, id).await
}

/// Reads an order and locks its row until the transaction ends (an update that changes
/// nothing takes the lock on both backends); `None` for an unknown order.
pub async fn lock_order(conn: &mut Conn, id: &str) -> Result<Option<Order>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE customer_order SET updated_at = updated_at WHERE id = $1 RETURNING {ORDER_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(order).transpose()
}

/// Moves a PENDING order to CONFIRMED; `false` if it was no longer PENDING.
pub async fn confirm(conn: &mut Conn, id: &str, at: i64) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE customer_order SET status = 'CONFIRMED', updated_at = $1 WHERE id = $2 AND status = 'PENDING'",
    )
    .bind(at)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Moves an order to CANCELLED if its status is one of `from`; `false` otherwise.
pub async fn cancel(
    conn: &mut Conn,
    id: &str,
    from: &[Status],
    reason: CancelReason,
    detail: &str,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let statuses = from
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let updated = sqlx::query(&format!(
        "UPDATE customer_order SET status = 'CANCELLED', cancel_reason = $1, cancel_detail = $2, \
         updated_at = $3 WHERE id = $4 AND status IN ({statuses})"
    ))
    .bind(reason.as_str())
    .bind(detail)
    .bind(at)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// PENDING orders whose deadline has passed at `now`, oldest deadline first.
pub async fn overdue_orders(
    conn: &mut Conn,
    now: i64,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM customer_order WHERE status = 'PENDING' AND deadline_at <= $1 \
         ORDER BY deadline_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Whether a live (PENDING or CONFIRMED) order uses the coupon.
pub async fn coupon_in_use(conn: &mut Conn, coupon_id: i64) -> Result<bool, sqlx::Error> {
    let found: Option<String> = sqlx::query_scalar(
        "SELECT id FROM customer_order WHERE coupon_id = $1 AND status IN ('PENDING', 'CONFIRMED') LIMIT 1",
    )
    .bind(coupon_id)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// Whether the coupon service has applied the coupon to an order of another user, which
/// proves that the coupon is not `user_id`'s: coupons never change hands.
pub async fn coupon_owned_by_other(
    conn: &mut Conn,
    coupon_id: i64,
    user_id: i64,
) -> Result<bool, sqlx::Error> {
    let found: Option<String> = sqlx::query_scalar(
        "SELECT id FROM customer_order WHERE coupon_id = $1 AND coupon_applied = 1 AND user_id <> $2 LIMIT 1",
    )
    .bind(coupon_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(found.is_some())
}

/// One entry of an order's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub at: i64,
    pub event: String,
    pub detail: Option<String>,
}

pub async fn add_timeline(
    conn: &mut Conn,
    order_id: &str,
    event: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    add_timeline_at(conn, order_id, now_ms(), event, detail).await
}

async fn add_timeline_at(
    conn: &mut Conn,
    order_id: &str,
    at: i64,
    event: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO order_timeline (order_id, at, event, detail) VALUES ($1, $2, $3, $4)")
        .bind(order_id)
        .bind(at)
        .bind(event)
        .bind(detail)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn timeline(conn: &mut Conn, order_id: &str) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT at, event, detail FROM order_timeline WHERE order_id = $1 ORDER BY id")
            .bind(order_id)
            .fetch_all(conn)
            .await?;
    rows.iter()
        .map(|row| {
            Ok(TimelineEntry {
                at: row.try_get("at")?,
                event: row.try_get("event")?,
                detail: row.try_get("detail")?,
            })
        })
        .collect()
}

/// Claims an idempotency key for a new order; `false` if the key was taken, in which case
/// [`find_idempotency_key`] says by which request.
pub async fn claim_idempotency_key(
    conn: &mut Conn,
    key: &str,
    request_hash: &str,
    order_id: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_key (idempotency_key, request_hash, order_id, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(key)
    .bind(request_hash)
    .bind(order_id)
    .bind(now_ms())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The request hash and order id an idempotency key was used for.
pub async fn find_idempotency_key(
    conn: &mut Conn,
    key: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT request_hash, order_id FROM idempotency_key WHERE idempotency_key = $1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await?;
    row.map(|row| Ok((row.try_get("request_hash")?, row.try_get("order_id")?)))
        .transpose()
}
