//! Answer bodies more than one service gives: the product service and the synchronous
//! baseline both show a product.

use schemars::JsonSchema;
use serde::Serialize;

/// A product as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Product {
    pub product_id: i64,
    pub name: String,
    pub price: i64,
    pub available: i64,
    pub reserved: i64,
}
