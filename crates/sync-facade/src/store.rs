//! Every SQL statement of the baseline.

use kit::Conn;
use serde::Serialize;
use sqlx::Row;

/// A product as the product service shows it. `available` is its stock; the baseline
/// reserves nothing, so `reserved` is always 0.
pub use contract::api::Product;

pub async fn insert_product(
    conn: &mut Conn,
    name: &str,
    price: i64,
    stock: i64,
) -> Result<Product, sqlx::Error> {
    let row =
        sqlx::query("INSERT INTO product (name, price, stock) VALUES ($1, $2, $3) RETURNING id")
            .bind(name)
            .bind(price)
            .bind(stock)
            .fetch_one(&mut *conn)
            .await?;
    Ok(Product {
        product_id: row.try_get("id")?,
        name: name.to_owned(),
        price,
        available: stock,
        reserved: 0,
    })
}

pub async fn find_product(conn: &mut Conn, id: i64) -> Result<Option<Product>, sqlx::Error> {
    let row = sqlx::query("SELECT id, name, price, stock FROM product WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| {
        Ok(Product {
            product_id: row.try_get("id")?,
            name: row.try_get("name")?,
            price: row.try_get("price")?,
            available: row.try_get("stock")?,
            reserved: 0,
        })
    })
    .transpose()
}

/// Takes `quantity` units of a product if it has them; its price when it did.
pub async fn take_stock(
    conn: &mut Conn,
    product_id: i64,
    quantity: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE product SET stock = stock - $1 WHERE id = $2 AND stock >= $1 RETURNING price",
    )
    .bind(quantity)
    .bind(product_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| row.try_get("price")).transpose()
}

pub async fn insert_coupon(
    conn: &mut Conn,
    user_id: i64,
    kind: &str,
    value: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO coupon (user_id, kind, value) VALUES ($1, $2, $3) RETURNING id")
        .bind(user_id)
        .bind(kind)
        .bind(value)
        .fetch_one(&mut *conn)
        .await?
        .try_get("id")
}

/// A coupon: owner, kind, value, and the order using it.
pub struct Coupon {
    pub user_id: i64,
    pub kind: String,
    pub value: i64,
    pub used_by_order: Option<String>,
}

pub async fn find_coupon(conn: &mut Conn, id: i64) -> Result<Option<Coupon>, sqlx::Error> {
    let row = sqlx::query("SELECT user_id, kind, value, used_by_order FROM coupon WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| {
        Ok(Coupon {
            user_id: row.try_get("user_id")?,
            kind: row.try_get("kind")?,
            value: row.try_get("value")?,
            used_by_order: row.try_get("used_by_order")?,
        })
    })
    .transpose()
}

/// Marks a coupon used by an order, unless another order got it first.
pub async fn use_coupon(conn: &mut Conn, id: i64, order_id: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE coupon SET used_by_order = $1 WHERE id = $2 AND used_by_order IS NULL")
            .bind(order_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Order {
    pub order_id: String,
    pub user_id: i64,
    pub status: String,
    pub items: Vec<Line>,
    pub total_amount: i64,
    pub discount_amount: i64,
    pub final_amount: i64,
    pub coupon_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Line {
    pub product_id: i64,
    pub quantity: i64,
    pub unit_price: i64,
}

pub async fn insert_order(conn: &mut Conn, order: &Order, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO facade_order (id, user_id, status, total_amount, discount_amount, final_amount, coupon_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&order.order_id)
    .bind(order.user_id)
    .bind(&order.status)
    .bind(order.total_amount)
    .bind(order.discount_amount)
    .bind(order.final_amount)
    .bind(order.coupon_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    for line in &order.items {
        sqlx::query(
            "INSERT INTO facade_order_line (order_id, product_id, quantity, unit_price) VALUES ($1, $2, $3, $4)",
        )
        .bind(&order.order_id)
        .bind(line.product_id)
        .bind(line.quantity)
        .bind(line.unit_price)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn find_order(conn: &mut Conn, id: &str) -> Result<Option<Order>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT user_id, status, total_amount, discount_amount, final_amount, coupon_id FROM facade_order WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let lines = sqlx::query(
        "SELECT product_id, quantity, unit_price FROM facade_order_line WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(Order {
        order_id: id.to_owned(),
        user_id: row.try_get("user_id")?,
        status: row.try_get("status")?,
        total_amount: row.try_get("total_amount")?,
        discount_amount: row.try_get("discount_amount")?,
        final_amount: row.try_get("final_amount")?,
        coupon_id: row.try_get("coupon_id")?,
        items: lines
            .into_iter()
            .map(|line| {
                Ok(Line {
                    product_id: line.try_get("product_id")?,
                    quantity: line.try_get("quantity")?,
                    unit_price: line.try_get("unit_price")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?,
    }))
}
