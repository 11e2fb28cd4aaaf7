//! `product.catalog`: keeps the catalog replica that prices new orders. Each entry keeps the
//! version it was set from, the upsert's `occurred_at`: an older upsert arriving later (a
//! dead letter replayed, a redelivery after compaction) changes nothing, so no price is ever
//! rolled back.

use contract::ProductUpserted;
use eventing::{HandleError, Inbound};
use kit::Conn;

use crate::store::{self, CatalogProduct};

pub async fn handle(
    conn: &mut Conn,
    inbound: &Inbound,
    product: &ProductUpserted,
) -> Result<(), HandleError> {
    let version = inbound.envelope.occurred_at.timestamp_millis();
    let entry = CatalogProduct {
        product_id: product.product_id,
        name: product.name.clone(),
        price: product.price,
    };
    if !store::upsert_catalog_product(conn, &entry, version).await? {
        tracing::info!(
            product_id = product.product_id,
            version,
            "an upsert no newer than the catalog's entry; not applied"
        );
    }
    Ok(())
}
