//! Every error code the HTTP APIs answer with, in one enum: each variant carries its status
//! and its wire name, so a code cannot be misspelled at a call site or answered with two
//! statuses, and the error table of `docs/http-api.md` is checked against [`ErrorCode::ALL`].

use axum::http::StatusCode;

/// Defines [`ErrorCode`] from one list of `Variant => "wire_name", STATUS`.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $code:literal, $status:ident;)*) => {
        /// An error code of the HTTP APIs, with its status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order they are defined.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The machine-readable code, as in `{"error": {"code": …}}`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status answered with this code.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    // Any service: the request itself.
    /// The body is not JSON.
    MalformedJson => "malformed_json", BAD_REQUEST;
    /// The body could not be read.
    UnreadableBody => "unreadable_body", BAD_REQUEST;
    /// The body is JSON of the wrong shape or types, or has an unknown field.
    InvalidBody => "invalid_body", UNPROCESSABLE_ENTITY;
    /// The body is not sent as `application/json`.
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    /// The body is larger than `HTTP_BODY_LIMIT_BYTES`.
    BodyTooLarge => "body_too_large", PAYLOAD_TOO_LARGE;
    /// No such route, or a path value no resource can have.
    NotFound => "not_found", NOT_FOUND;
    /// An operator endpoint was called without the admin token (`Authorization: Bearer`).
    Unauthorized => "unauthorized", UNAUTHORIZED;
    /// The route exists, not with this method.
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED;
    /// The request took longer than `HTTP_REQUEST_TIMEOUT_MS` and was abandoned. 503 rather
    /// than 408: a client may repeat a request after a 408 as never received, and an order
    /// placed without an `Idempotency-Key` might then be placed twice.
    TimedOut => "timed_out", SERVICE_UNAVAILABLE;
    /// Too many connections or requests at once (`HTTP_MAX_CONNECTIONS`,
    /// `HTTP_MAX_CONCURRENT_REQUESTS`); answered with `Retry-After`.
    Overloaded => "overloaded", SERVICE_UNAVAILABLE;
    /// Something went wrong on our side; the cause is in the log.
    Internal => "internal", INTERNAL_SERVER_ERROR;
    /// The request's commit was sent and no answer came from the database in time: the change
    /// may or may not have been kept. Never with `Retry-After`; look before trying again (an
    /// order: `GET /orders/{id}`, or retry with the same `Idempotency-Key`).
    OutcomeUnknown => "outcome_unknown", INTERNAL_SERVER_ERROR;

    // Order service.
    InvalidUserId => "invalid_user_id", UNPROCESSABLE_ENTITY;
    NoItems => "no_items", UNPROCESSABLE_ENTITY;
    TooManyItems => "too_many_items", UNPROCESSABLE_ENTITY;
    InvalidProductId => "invalid_product_id", UNPROCESSABLE_ENTITY;
    InvalidQuantity => "invalid_quantity", UNPROCESSABLE_ENTITY;
    DuplicateProduct => "duplicate_product", UNPROCESSABLE_ENTITY;
    InvalidCouponId => "invalid_coupon_id", UNPROCESSABLE_ENTITY;
    UnknownProduct => "unknown_product", UNPROCESSABLE_ENTITY;
    TotalTooLarge => "total_too_large", UNPROCESSABLE_ENTITY;
    CouponNotOwned => "coupon_not_owned", UNPROCESSABLE_ENTITY;
    CouponInUse => "coupon_in_use", CONFLICT;
    InvalidIdempotencyKey => "invalid_idempotency_key", BAD_REQUEST;
    IdempotencyKeyReused => "idempotency_key_reused", UNPROCESSABLE_ENTITY;
    OrderNotFound => "order_not_found", NOT_FOUND;
    OrderAlreadyCancelled => "order_already_cancelled", CONFLICT;
    ProductNotInCatalog => "product_not_in_catalog", NOT_FOUND;

    // Product service.
    InvalidName => "invalid_name", UNPROCESSABLE_ENTITY;
    InvalidPrice => "invalid_price", UNPROCESSABLE_ENTITY;
    InvalidStock => "invalid_stock", UNPROCESSABLE_ENTITY;
    ProductNotFound => "product_not_found", NOT_FOUND;

    // Coupon service.
    InvalidValue => "invalid_value", UNPROCESSABLE_ENTITY;
    CouponNotFound => "coupon_not_found", NOT_FOUND;

    // The synchronous baseline (sync-facade).
    /// A line asks for more units than the product has; nothing was taken.
    OutOfStock => "out_of_stock", CONFLICT;
    /// The coupon does not exist, is someone else's or is already used.
    CouponRejected => "coupon_rejected", CONFLICT;
    /// The data platform failed or did not answer in time, so the order was not placed.
    DataPlatformFailed => "data_platform_failed", BAD_GATEWAY;

    // Data-platform mock.
    MissingIdempotencyKey => "missing_idempotency_key", BAD_REQUEST;
    /// Failing on purpose; the mock answers it with the status its settings say.
    Unavailable => "unavailable", SERVICE_UNAVAILABLE;
    InvalidSettings => "invalid_settings", UNPROCESSABLE_ENTITY;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<contract::order_request::Rule> for ErrorCode {
    fn from(rule: contract::order_request::Rule) -> Self {
        use contract::order_request::Rule;
        match rule {
            Rule::UserId => ErrorCode::InvalidUserId,
            Rule::NoItems => ErrorCode::NoItems,
            Rule::TooManyItems => ErrorCode::TooManyItems,
            Rule::ProductId => ErrorCode::InvalidProductId,
            Rule::Quantity => ErrorCode::InvalidQuantity,
            Rule::DuplicateProduct => ErrorCode::DuplicateProduct,
            Rule::CouponId => ErrorCode::InvalidCouponId,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_code_is_unique_snake_case_and_an_error_status() {
        let names: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    /// The codes the HTTP API table of `docs/http-api.md` names in its error codes column,
    /// which must be exactly the enum's.
    #[test]
    fn the_api_reference_lists_exactly_these_codes() {
        let reference = include_str!("../../../docs/http-api.md");
        let start = reference.find("# HTTP API").expect("an HTTP API section");
        let section = &reference[start..];
        let end = section[4..].find("\n#").map_or(section.len(), |e| e + 4);
        let documented: BTreeSet<&str> = section[..end]
            .lines()
            .filter_map(|line| line.strip_prefix('|'))
            .filter_map(|row| row.rsplit('|').nth(1))
            .flat_map(|cell| cell.split('`').skip(1).step_by(2))
            .filter(|word| word.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        let known: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            documented.difference(&known).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "codes in docs/http-api.md that no service answers"
        );
        assert_eq!(
            known.difference(&documented).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "codes missing from the table in docs/http-api.md"
        );
    }
}
