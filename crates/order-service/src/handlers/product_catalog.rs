//! `product.catalog`: keeps the catalog replica that prices new orders.

use contract::ProductUpserted;
use eventing::{Conn, HandleError};

use crate::store::{self, CatalogProduct};

pub async fn handle(conn: &mut Conn, product: &ProductUpserted) -> Result<(), HandleError> {
    store::upsert_catalog_product(
        conn,
        &CatalogProduct {
            product_id: product.product_id,
            name: product.name.clone(),
            price: product.price,
        },
    )
    .await?;
    Ok(())
}
