//! The error codes only this service answers, beside the kit's generic ones
//! ([`kit::ErrorCode`]).

kit::error_codes! {
    /// The coupon service's own error codes.
    pub enum CouponCode {
        InvalidUserId => "invalid_user_id", UNPROCESSABLE_ENTITY;
        InvalidValue => "invalid_value", UNPROCESSABLE_ENTITY;
        CouponNotFound => "coupon_not_found", NOT_FOUND;
    }
}
