//! The reconciliation sweep against a real database: stock that drifted from its
//! reservations is repaired, and correct stock is left alone.

use kit::db::{DatabaseSettings, connect_and_migrate};
use product_service::reconcile::{Repair, sweep};

#[tokio::test]
async fn reserved_stock_that_drifted_from_its_reservations_is_repaired() {
    let url = testkit::fresh_database("reconcile")
        .await
        .expect("database");
    let db = connect_and_migrate(
        "product-service",
        &DatabaseSettings::new(url),
        &[&eventing::runtime::MIGRATIONS, &product_service::MIGRATIONS],
    )
    .await
    .expect("database");
    let now = kit::now_ms();
    for (id, available, reserved) in [(1, 8, 2), (2, 5, 0)] {
        sqlx::query(
            "INSERT INTO product (id, name, price, available, reserved, created_at, updated_at) \
             VALUES ($1, 'P', 100, $2, $3, $4, $4)",
        )
        .bind(id)
        .bind(available)
        .bind(reserved)
        .bind(now)
        .execute(&db)
        .await
        .expect("product");
    }
    // Product 1 is held by one reservation of 2; product 2 by nothing.
    sqlx::query(
        "INSERT INTO reservation (order_id, status, updated_at) VALUES ('o1', 'RESERVED', $1)",
    )
    .bind(now)
    .execute(&db)
    .await
    .expect("reservation");
    sqlx::query(
        "INSERT INTO reservation_line (order_id, product_id, quantity) VALUES ('o1', 1, 2)",
    )
    .execute(&db)
    .await
    .expect("line");
    assert_eq!(
        sweep(&db).await.expect("sweep"),
        Vec::<Repair>::new(),
        "consistent stock is left alone"
    );

    // Someone "fixes" product 2 by hand and reserves 3 units nobody holds.
    sqlx::query("UPDATE product SET available = 2, reserved = 3 WHERE id = 2")
        .execute(&db)
        .await
        .expect("drift");
    let repairs = sweep(&db).await.expect("sweep");
    assert_eq!(
        repairs,
        [Repair {
            product_id: 2,
            was_reserved: 3,
            held: 0
        }]
    );
    let (available, reserved): (i64, i64) =
        sqlx::query_as("SELECT available, reserved FROM product WHERE id = 2")
            .fetch_one(&db)
            .await
            .expect("product");
    assert_eq!(
        (available, reserved),
        (5, 0),
        "the units come back to available"
    );
    assert!(
        sweep(&db).await.expect("sweep").is_empty(),
        "a repair is done once"
    );
}
