//! The error codes only this service answers, beside the kit's generic ones
//! ([`kit::ErrorCode`]).

kit::error_codes! {
    /// The order service's own error codes.
    pub enum OrderCode {
        /// A line names a product the catalog does not know (yet).
        UnknownProduct => "unknown_product", UNPROCESSABLE_ENTITY;
        /// The order's total does not fit in 64 bits.
        TotalTooLarge => "total_too_large", UNPROCESSABLE_ENTITY;
        /// The coupon belongs to another user.
        CouponNotOwned => "coupon_not_owned", UNPROCESSABLE_ENTITY;
        /// The coupon is held by another order of the user's that is still pending.
        CouponInUse => "coupon_in_use", CONFLICT;
        /// The `Idempotency-Key` was used before for a different request.
        IdempotencyKeyReused => "idempotency_key_reused", UNPROCESSABLE_ENTITY;
        OrderNotFound => "order_not_found", NOT_FOUND;
        OrderAlreadyCancelled => "order_already_cancelled", CONFLICT;
        ProductNotInCatalog => "product_not_in_catalog", NOT_FOUND;
    }
}
