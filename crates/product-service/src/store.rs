//! Every SQL statement of the product service.

use std::collections::BTreeSet;

use contract::StockLine;
use kit::db::{Backend, placeholders};
use kit::{Conn, now_ms};
use sqlx::Row;

/// A product as the API shows it (the synchronous baseline shows it too).
pub use contract::api::Product;

const PRODUCT_COLUMNS: &str = "id, name, price, available, reserved";

fn product(row: &sqlx::any::AnyRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        product_id: row.try_get("id")?,
        name: row.try_get("name")?,
        price: row.try_get("price")?,
        available: row.try_get("available")?,
        reserved: row.try_get("reserved")?,
    })
}

pub async fn insert_product(
    conn: &mut Conn,
    name: &str,
    price: i64,
    stock: i64,
) -> Result<Product, sqlx::Error> {
    let now = now_ms();
    let row = sqlx::query(&format!(
        "INSERT INTO product (name, price, available, reserved, created_at, updated_at) \
         VALUES ($1, $2, $3, 0, $4, $4) RETURNING {PRODUCT_COLUMNS}"
    ))
    .bind(name)
    .bind(price)
    .bind(stock)
    .bind(now)
    .fetch_one(conn)
    .await?;
    product(&row)
}

pub async fn find_product(conn: &mut Conn, id: i64) -> Result<Option<Product>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM product WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(product).transpose()
}

/// Adds units to `available`; `None` if there is no such product.
pub async fn restock(
    conn: &mut Conn,
    id: i64,
    quantity: i64,
) -> Result<Option<Product>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE product SET available = available + $1, updated_at = $2 WHERE id = $3 \
         RETURNING {PRODUCT_COLUMNS}"
    ))
    .bind(quantity)
    .bind(now_ms())
    .bind(id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(product).transpose()
}

/// Takes the reservation slot of an order with the given status. `false` when the order
/// already has one: this service has decided for it before.
pub async fn claim_reservation(
    conn: &mut Conn,
    order_id: &str,
    status: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO reservation (order_id, status, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(status)
    .bind(now_ms())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn set_reservation_status(
    conn: &mut Conn,
    order_id: &str,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reservation SET status = $1, updated_at = $2 WHERE order_id = $3")
        .bind(status)
        .bind(now_ms())
        .bind(order_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves `quantity` from available to reserved if that many are available. `false` when the
/// product is missing or short; the row is locked by this transaction either way.
pub async fn take_stock(
    conn: &mut Conn,
    product_id: i64,
    quantity: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE product SET available = available - $1, reserved = reserved + $1, updated_at = $2 \
         WHERE id = $3 AND available >= $1",
    )
    .bind(quantity)
    .bind(now_ms())
    .bind(product_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Moves `quantity` back from reserved to available.
pub async fn give_back_stock(
    conn: &mut Conn,
    product_id: i64,
    quantity: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE product SET available = available + $1, reserved = reserved - $1, updated_at = $2 \
         WHERE id = $3",
    )
    .bind(quantity)
    .bind(now_ms())
    .bind(product_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the rows of `products` in id order, for the rest of the transaction (Postgres only:
/// SQLite has one writer and no row locks). A batch of order events takes its locks here, all
/// at once and in one order, so two batches never deadlock over stock.
pub async fn lock_products(conn: &mut Conn, products: &BTreeSet<i64>) -> Result<(), sqlx::Error> {
    if products.is_empty() || Backend::of_conn(conn) == Backend::Sqlite {
        return Ok(());
    }
    let sql = format!(
        "SELECT id FROM product WHERE id IN ({}) ORDER BY id FOR UPDATE",
        placeholders(1, products.len())
    );
    let mut query = sqlx::query(&sql);
    for id in products {
        query = query.bind(*id);
    }
    query.fetch_all(conn).await?;
    Ok(())
}

/// The products that `orders` hold stock of.
pub async fn reserved_products(
    conn: &mut Conn,
    orders: &[String],
) -> Result<BTreeSet<i64>, sqlx::Error> {
    if orders.is_empty() {
        return Ok(BTreeSet::new());
    }
    let sql = format!(
        "SELECT DISTINCT product_id FROM reservation_line WHERE order_id IN ({})",
        placeholders(1, orders.len())
    );
    let mut query = sqlx::query_scalar(&sql);
    for order in orders {
        query = query.bind(order);
    }
    Ok(query.fetch_all(conn).await?.into_iter().collect())
}

pub async fn insert_reservation_lines(
    conn: &mut Conn,
    order_id: &str,
    lines: &[StockLine],
) -> Result<(), sqlx::Error> {
    for line in lines {
        sqlx::query(
            "INSERT INTO reservation_line (order_id, product_id, quantity) VALUES ($1, $2, $3)",
        )
        .bind(order_id)
        .bind(line.product_id)
        .bind(line.quantity)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Marks a RESERVED reservation RELEASED and returns its lines; `None` when the order holds
/// nothing (never reserved, failed, or already released).
pub async fn release_reservation(
    conn: &mut Conn,
    order_id: &str,
) -> Result<Option<Vec<StockLine>>, sqlx::Error> {
    let released = sqlx::query(
        "UPDATE reservation SET status = 'RELEASED', updated_at = $1 \
         WHERE order_id = $2 AND status = 'RESERVED'",
    )
    .bind(now_ms())
    .bind(order_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if released == 0 {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT product_id, quantity FROM reservation_line WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StockLine {
                product_id: row.try_get("product_id")?,
                quantity: row.try_get("quantity")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Some)
}

/// The status of an order's reservation, if this service has heard of the order.
pub async fn reservation_status(
    conn: &mut Conn,
    order_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM reservation WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(conn)
        .await
}
