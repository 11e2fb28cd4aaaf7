//! The error codes only this service answers, beside the kit's generic ones
//! ([`kit::ErrorCode`]).

kit::error_codes! {
    /// The data-platform mock's own error codes.
    pub enum MockCode {
        MissingIdempotencyKey => "missing_idempotency_key", BAD_REQUEST;
        /// Failing on purpose; the mock answers it with the status its settings say.
        Unavailable => "unavailable", SERVICE_UNAVAILABLE;
        InvalidSettings => "invalid_settings", UNPROCESSABLE_ENTITY;
    }
}
