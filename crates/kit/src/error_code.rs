//! Error codes: each variant carries its status and its wire name, so a code cannot be
//! misspelled at a call site or answered with two statuses. The kit holds the generic ones
//! ([`ErrorCode`]); each service holds its own, and `deploy-tests` checks the error table of
//! `docs/http-api.md` against all of them together.

use axum::http::StatusCode;

/// What an error code is: its wire name and the one status it is answered with. The kit's
/// generic codes are [`ErrorCode`]; each service declares its own with [`crate::error_codes!`],
/// so that a new code in one service changes that service alone.
pub trait Code: Copy + Send + Sync + 'static {
    /// The machine-readable code, as in `{"error": {"code": …}}`.
    fn as_str(self) -> &'static str;
    /// The HTTP status answered with this code.
    fn status(self) -> StatusCode;
}

/// Defines an enum of error codes from one list of `Variant => "wire_name", STATUS;`, with
/// `ALL` (every code, in order), [`Code`] and `Display`.
#[macro_export]
macro_rules! error_codes {
    ($(#[$enum_doc:meta])* pub enum $name:ident {
        $($(#[$doc:meta])* $variant:ident => $code:literal, $status:ident;)*
    }) => {
        $(#[$enum_doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$doc])* $variant,)*
        }

        impl $name {
            /// Every code, in the order they are defined.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
        }

        impl $crate::error_code::Code for $name {
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            fn status(self) -> ::axum::http::StatusCode {
                match self {
                    $($name::$variant => ::axum::http::StatusCode::$status,)*
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::error_code::Code::as_str(*self))
            }
        }
    };
}

error_codes! {
    /// The codes any service may answer: about the request itself, its limits, and our side.
    pub enum ErrorCode {
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
    /// The `Idempotency-Key` header is not 1 to 255 visible ASCII characters.
    InvalidIdempotencyKey => "invalid_idempotency_key", BAD_REQUEST;
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
    }
}

/// A broken rule of an order request is answered 422 with the rule's code, by whichever API
/// checks it.
impl Code for contract::order_request::Rule {
    fn as_str(self) -> &'static str {
        self.code()
    }

    fn status(self) -> StatusCode {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generic_code_is_snake_case_and_an_error_status() {
        for code in ErrorCode::ALL {
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }
}
