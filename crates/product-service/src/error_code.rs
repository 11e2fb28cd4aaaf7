//! The error codes only this service answers, beside the kit's generic ones
//! ([`kit::ErrorCode`]).

kit::error_codes! {
    /// The product service's own error codes.
    pub enum ProductCode {
        InvalidName => "invalid_name", UNPROCESSABLE_ENTITY;
        InvalidPrice => "invalid_price", UNPROCESSABLE_ENTITY;
        InvalidStock => "invalid_stock", UNPROCESSABLE_ENTITY;
        /// A restock of no units, or of more than a product may hold.
        InvalidQuantity => "invalid_quantity", UNPROCESSABLE_ENTITY;
        ProductNotFound => "product_not_found", NOT_FOUND;
    }
}
