//! The error codes only this service answers, beside the kit's generic ones
//! ([`kit::ErrorCode`]).

kit::error_codes! {
    /// The synchronous baseline's own error codes.
    pub enum FacadeCode {
        /// A line names a product that does not exist.
        UnknownProduct => "unknown_product", UNPROCESSABLE_ENTITY;
        /// The order's total does not fit in 64 bits.
        TotalTooLarge => "total_too_large", UNPROCESSABLE_ENTITY;
        /// A line asks for more units than the product has; nothing was taken.
        OutOfStock => "out_of_stock", CONFLICT;
        /// The coupon does not exist, is someone else's or is already used.
        CouponRejected => "coupon_rejected", CONFLICT;
        /// The data platform failed or did not answer in time, so the order was not placed.
        DataPlatformFailed => "data_platform_failed", BAD_GATEWAY;
        InvalidName => "invalid_name", UNPROCESSABLE_ENTITY;
        InvalidPrice => "invalid_price", UNPROCESSABLE_ENTITY;
        InvalidStock => "invalid_stock", UNPROCESSABLE_ENTITY;
        InvalidUserId => "invalid_user_id", UNPROCESSABLE_ENTITY;
        InvalidValue => "invalid_value", UNPROCESSABLE_ENTITY;
        OrderNotFound => "order_not_found", NOT_FOUND;
        ProductNotFound => "product_not_found", NOT_FOUND;
    }
}
