//! Operator endpoints: the ones that change state outside the saga (restocking a product,
//! retrying deliveries, the mock's failure settings) need `Authorization: Bearer $ADMIN_TOKEN`.
//! [`require`] guards a router with it; without the right token a request is answered 401 in
//! the JSON error shape, and with no token configured every such request is.
//!
//! The token is compared in constant time (as SHA-256 digests, so that neither its content nor
//! its length shows in how long a refusal takes).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::ErrorCode;
use crate::http::ApiError;

/// The shortest token accepted: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token is refused as a setting.
#[derive(Debug, thiserror::Error)]
#[error("ADMIN_TOKEN must be at least {MIN_TOKEN_LEN} visible ASCII characters")]
pub struct WeakToken;

/// The admin token of a service, or none (every admin request is then refused).
#[derive(Clone, Default)]
pub struct AdminToken(Option<Arc<[u8; 32]>>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself, not even its digest.
        f.write_str(if self.0.is_some() {
            "AdminToken(set)"
        } else {
            "AdminToken(unset)"
        })
    }
}

impl AdminToken {
    /// The token `settings` name (`ADMIN_TOKEN`), checked.
    pub fn of(settings: &crate::http::HttpSettings) -> Result<AdminToken, WeakToken> {
        AdminToken::new(settings.admin_token.as_deref())
    }

    /// The token from a setting: absent or empty is no token.
    pub fn new(token: Option<&str>) -> Result<AdminToken, WeakToken> {
        match token.map(str::trim) {
            None | Some("") => Ok(AdminToken(None)),
            Some(token) => {
                if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(WeakToken);
                }
                Ok(AdminToken(Some(Arc::new(Sha256::digest(token).into()))))
            }
        }
    }

    /// Whether a token is configured at all.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `presented` is the token, in time that does not depend on where they differ.
    pub fn accepts(&self, presented: &str) -> bool {
        let Some(expected) = &self.0 else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented).into();
        let difference = expected
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// `router` with every one of its routes behind the admin token.
pub fn guard<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    token: AdminToken,
) -> axum::Router<S> {
    router.route_layer(axum::middleware::from_fn_with_state(token, require))
}

/// Middleware: lets a request through only with `Authorization: Bearer <the token>`.
///
/// `router.route_layer(axum::middleware::from_fn_with_state(token, admin::require))`
pub async fn require(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, credentials) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| credentials.trim())
        });
    match presented {
        Some(credentials) if token.accepts(credentials) => next.run(request).await,
        _ => {
            let message = if token.is_set() {
                "this endpoint needs `Authorization: Bearer <ADMIN_TOKEN>`"
            } else {
                "this endpoint needs an admin token, and this service has no ADMIN_TOKEN set"
            };
            let mut response = ApiError::new(ErrorCode::Unauthorized, message).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"admin\""),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_itself_is_accepted() {
        let token = AdminToken::new(Some("s3cret-token-of-some-length")).unwrap();
        assert!(token.accepts("s3cret-token-of-some-length"));
        assert!(!token.accepts("s3cret-token-of-some-lengtH"));
        assert!(!token.accepts("s3cret-token-of-some-length "));
        assert!(!token.accepts(""));
    }

    async fn answer(token: &AdminToken, authorization: Option<&str>) -> (u16, String, bool) {
        use tower::ServiceExt;
        let router = guard(
            axum::Router::new().route("/op", axum::routing::post(|| async { "done" })),
            token.clone(),
        );
        let mut request = axum::http::Request::post("/op");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = router
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let challenged = response.headers().contains_key(header::WWW_AUTHENTICATE);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            challenged,
        )
    }

    #[tokio::test]
    async fn an_operator_endpoint_answers_401_in_the_json_shape_without_the_token() {
        let token = AdminToken::new(Some("s3cret-token-of-some-length")).unwrap();
        for presented in [
            None,
            Some("Bearer wrong-token-of-some-length"),
            Some("Basic czNjcmV0"),
        ] {
            let (status, body, challenged) = answer(&token, presented).await;
            assert_eq!(status, 401, "{presented:?}");
            assert!(body.contains(r#""code":"unauthorized""#), "{body}");
            assert!(challenged, "a 401 names its scheme");
        }
        let (status, body, _) = answer(&token, Some("Bearer s3cret-token-of-some-length")).await;
        assert_eq!((status, body.as_str()), (200, "done"));
        let (status, _, _) = answer(&AdminToken::default(), Some("Bearer ")).await;
        assert_eq!(status, 401, "with no token set, nothing gets through");
    }

    #[test]
    fn no_token_accepts_nothing_and_a_short_token_is_refused_as_a_setting() {
        let none = AdminToken::new(None).unwrap();
        assert!(!none.is_set());
        assert!(!none.accepts(""));
        assert!(AdminToken::new(Some("short")).is_err());
        assert!(AdminToken::new(Some("has a space in it, long enough")).is_err());
    }
}
