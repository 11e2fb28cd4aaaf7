//! The reconciliation sweep against a real database: a coupon held by no applied use is made
//! available again; a coupon its order really holds is left alone.

use coupon_service::reconcile::sweep;
use kit::db::{DatabaseSettings, connect_and_migrate};

#[tokio::test]
async fn a_coupon_held_by_no_applied_use_is_made_available_again() {
    let url = testkit::fresh_database("coupon_reconcile")
        .await
        .expect("database");
    let db = connect_and_migrate(
        "coupon-service",
        &DatabaseSettings::new(url),
        &[&eventing::runtime::MIGRATIONS, &coupon_service::MIGRATIONS],
    )
    .await
    .expect("database");
    let now = kit::now_ms();
    for (id, order) in [(1, "held"), (2, "released")] {
        sqlx::query(
            "INSERT INTO coupon (id, user_id, kind, value, used_by_order, created_at, updated_at) \
             VALUES ($1, 7, 'FIXED', 100, $2, $3, $3)",
        )
        .bind(id)
        .bind(order)
        .bind(now)
        .execute(&db)
        .await
        .expect("coupon");
    }
    for (order, coupon, status) in [("held", 1, "APPLIED"), ("released", 2, "RELEASED")] {
        sqlx::query("INSERT INTO coupon_use (order_id, coupon_id, status, updated_at) VALUES ($1, $2, $3, $4)")
            .bind(order)
            .bind(coupon)
            .bind(status)
            .bind(now)
            .execute(&db)
            .await
            .expect("use");
    }
    assert_eq!(
        sweep(&db).await.expect("sweep"),
        [(2, "released".to_owned())]
    );
    let used: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, used_by_order FROM coupon ORDER BY id")
            .fetch_all(&db)
            .await
            .expect("coupons");
    assert_eq!(used, [(1, Some("held".to_owned())), (2, None)]);
    assert!(sweep(&db).await.expect("sweep").is_empty());
}
