//! What every HTTP API shares: the JSON error type, a JSON extractor whose rejections are JSON
//! errors too, health and metrics routes, and the layers around every router (request span,
//! body limit, timeout, request counting).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;

pub use crate::error_code::{Code, ErrorCode};
use crate::metrics::Metrics;
use crate::trace::TraceContext;

/// Limits every HTTP API applies.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpSettings {
    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(
        long = "http-body-limit-bytes",
        env = "HTTP_BODY_LIMIT_BYTES",
        default_value_t = 65_536
    )]
    pub body_limit_bytes: usize,
    /// Longest a request may take before it is abandoned and answered 503 `timed_out`.
    #[arg(
        long = "http-request-timeout-ms",
        env = "HTTP_REQUEST_TIMEOUT_MS",
        default_value = "10s",
        value_parser = crate::duration::parse
    )]
    pub request_timeout: Duration,
    /// The token operator endpoints (restock, delivery retry, the mock's settings) need, as
    /// `Authorization: Bearer <token>`: 16 or more visible ASCII characters. Unset, those
    /// endpoints refuse every request with 401.
    #[arg(long = "admin-token", env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Longest a client may take to send a request's headers (and longest a kept-alive
    /// connection may sit idle) before the connection is closed: slowloris cannot hold one.
    #[arg(
        long = "http-header-read-timeout-ms",
        env = "HTTP_HEADER_READ_TIMEOUT_MS",
        default_value = "10s",
        value_parser = crate::duration::parse
    )]
    pub header_read_timeout: Duration,
    /// Most connections open at once; one more is answered 503 `overloaded` and closed.
    #[arg(
        id = "http_max_open_connections",
        long = "http-max-connections",
        env = "HTTP_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub max_connections: usize,
    /// Most API requests handled at once (health and metrics apart); one more is answered
    /// 503 `overloaded` with `Retry-After` at once, rather than queued until it times out.
    #[arg(
        long = "http-max-concurrent-requests",
        env = "HTTP_MAX_CONCURRENT_REQUESTS",
        default_value_t = 64
    )]
    pub max_concurrent_requests: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        crate::defaults::defaults()
    }
}

/// An error answered as `{"error": {"code": "…", "message": "…"}}`.
///
/// The caller's mistakes are 4xx with a code to branch on and a message to read. Anything
/// unexpected is a 500 with a generic message, while its cause chain goes to the log. The
/// status comes from the [`ErrorCode`], so one code always has one status.
#[derive(Debug)]
pub struct ApiError {
    code: &'static str,
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// An error with `code` (the kit's [`ErrorCode`] or a service's own), answered with the
    /// code's status.
    pub fn new(code: impl Code, message: impl Into<String>) -> Self {
        ApiError {
            code: code.as_str(),
            status: code.status(),
            message: message.into(),
        }
    }

    /// 500: logs the error with its causes and answers without them.
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        let error = error.into();
        tracing::error!(error = format!("{error:#}"), "request failed");
        Self::new(
            ErrorCode::Internal,
            "something went wrong on our side; it has been logged",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::internal(error)
    }
}

impl ApiError {
    /// The answer, with `Retry-After: 1`: for a refusal that says nothing was done and the
    /// same request may come again shortly (a timeout, load shed).
    pub fn retry_shortly(self) -> Response {
        let mut response = self.into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s: malformed JSON is 400, a body that is not a
/// JSON object or has the wrong shape or types is 422, a missing content type is 415, a body over the limit is 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(json_rejection)?;
        // serde reads a struct from an array too (`[1, [...], null]`), which no OpenAPI
        // document here allows: every body is an object.
        if !value.is_object() {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "the body must be a JSON object",
            ));
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| ApiError::new(ErrorCode::InvalidBody, e.to_string()))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::new(ErrorCode::InvalidBody, e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(ErrorCode::MalformedJson, e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                "the request body is larger than this service accepts",
            )
        }
        other => ApiError::new(ErrorCode::UnreadableBody, other.body_text()),
    }
}

/// `Path<T>` whose rejections are [`ApiError`]s: a path value of the wrong type is 404, since
/// no resource can have such an id.
#[derive(Debug, Clone, Copy)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::new(ErrorCode::NotFound, e.body_text()))
            }
            Err(other) => Err(ApiError::internal(anyhow::anyhow!(other.body_text()))),
        }
    }
}

/// Whole numbers in request bodies, read as JSON Schema reads them: `"integer"` is any number
/// without a fractional part, so `474.0` is the integer 474 and must be accepted where the
/// OpenAPI document says `integer`. serde alone would refuse it. Use with
/// `#[serde(deserialize_with = "kit::http::whole")]`, or [`whole_opt`] (with
/// `#[serde(default)]`) for an optional field.
pub fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    let number = <serde_json::Number as serde::Deserialize>::deserialize(deserializer)?;
    whole_number(&number)
}

/// [`whole`] for an optional field: absent or `null` is `None`.
pub fn whole_opt<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    let number = <Option<serde_json::Number> as serde::Deserialize>::deserialize(deserializer)?;
    number.map(|number| whole_number(&number)).transpose()
}

/// `number` as a `T`, if it is whole and in range; the error names it otherwise.
fn whole_number<T: TryFrom<i128>, E: serde::de::Error>(
    number: &serde_json::Number,
) -> Result<T, E> {
    whole_value(number).ok_or_else(|| {
        E::custom(format!(
            "invalid value: {number}, expected a whole number in range"
        ))
    })
}

fn whole_value<T: TryFrom<i128>>(number: &serde_json::Number) -> Option<T> {
    let wide = number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
        .or_else(|| {
            // Only floats that are whole and well inside i128; anything that big fails the
            // conversion to `T` anyway.
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e36)
                .map(|f| f as i128)
        })?;
    T::try_from(wide).ok()
}

/// The `Idempotency-Key` request header, as the order service and the data-platform mock read it.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// The rule for an idempotency key as a JSON Schema pattern (with the length bounds beside it in
/// the OpenAPI documents): visible ASCII only, so that a key is the same bytes everywhere.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]+$";

/// The `Idempotency-Key` header: absent, or 1 to 255 visible ASCII characters (anything else is
/// 400 `invalid_idempotency_key`).
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidIdempotencyKey,
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ),
        )
    };
    let key = value.to_str().map_err(|_| invalid())?;
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !visible {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

/// The trace a request belongs to: continued from its `traceparent` header when that is
/// valid, else new. Extracting it records the trace id on the request's span.
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace(pub TraceContext);

impl<S: Send + Sync> FromRequestParts<S> for RequestTrace {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(contract::topics::HEADER_TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        // The request's span took the header's context as its parent when it was made; this
        // reads the span's own context back (or, with no span exported, makes a child).
        let span = tracing::Span::current();
        let trace = crate::trace::continue_in(&span, header.and_then(TraceContext::parse));
        span.record("trace_id", trace.trace_id());
        Ok(RequestTrace(trace))
    }
}

/// Wraps a service's API with its `health` routes ([`crate::health::routes`]) and the layers
/// every API has: one span per request, request counting into `metrics`, load shedding, the
/// body limit, the timeout, and JSON answers for unknown paths and methods.
pub fn finish_router(
    api: Router,
    health: Router,
    metrics: Metrics,
    settings: &HttpSettings,
) -> Router {
    let in_flight = Arc::new(Semaphore::new(settings.max_concurrent_requests.max(1)));
    api.layer(middleware::from_fn_with_state(in_flight, shed_load))
        .merge(health)
        .fallback(|| async {
            ApiError::new(
                ErrorCode::NotFound,
                "no such route; see docs/http-api.md for the API",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take that method; see docs/http-api.md for the API",
            )
        })
        .layer(middleware::from_fn_with_state(metrics, count_requests))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            settings.request_timeout,
            time_limit,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// Answers 503 `overloaded` with `Retry-After: 1` at once when as many requests as `in_flight`
/// has permits are being handled: under a flood, a quick refusal the client can retry keeps
/// the service answering, where a queue would make every request wait until it timed out.
pub async fn shed_load(
    State(in_flight): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    match in_flight.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::new(
            ErrorCode::Overloaded,
            "this service is handling as many requests as it takes; try again shortly",
        )
        .retry_shortly(),
    }
}

/// Abandons a request that takes longer than `limit` and answers 503 `timed_out` with
/// `Retry-After`, in the JSON error shape: `middleware::from_fn_with_state(limit, time_limit)`.
/// A request whose handler has started to commit ([`Committing`]) is never abandoned: its
/// answer is the one the commit leads to, since a client told "try again" about a change
/// that was in fact kept would make it twice.
pub async fn time_limit(
    State(limit): State<Duration>,
    mut request: Request,
    next: Next,
) -> Response {
    let committing = Committing::default();
    request.extensions_mut().insert(committing.clone());
    let mut handled = std::pin::pin!(next.run(request));
    match tokio::time::timeout(limit, &mut handled).await {
        Ok(response) => response,
        Err(_) if committing.started() => {
            tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                "the request's time is up while it commits; waiting for the commit"
            );
            handled.await
        }
        Err(_) => {
            let message = format!("the request took longer than {} ms", limit.as_millis());
            ApiError::new(ErrorCode::TimedOut, message).retry_shortly()
        }
    }
}

/// Whether a request's handler has started to commit: [`time_limit`] then lets it finish.
/// Extract it in a handler and commit with [`commit`] (or call [`Committing::start`] before a
/// single statement that writes).
#[derive(Debug, Clone, Default)]
pub struct Committing(Arc<std::sync::atomic::AtomicBool>);

impl Committing {
    /// From here on, the request is not abandoned at its time limit.
    pub fn start(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn started(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Committing {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Committing>()
            .cloned()
            .unwrap_or_default())
    }
}

/// Commits a request's transaction, past the request's time limit if need be (see
/// [`time_limit`]), within [`crate::db::work_timeout`]. A commit the database does not answer
/// in that time is `outcome_unknown`: the change may have been kept, and the answer says so
/// rather than inviting a retry.
pub async fn commit(tx: crate::db::Tx, committing: &Committing) -> Result<(), ApiError> {
    committing.start();
    match crate::db::bounded(tx.commit()).await {
        Some(committed) => committed.map_err(ApiError::from),
        None => Err(ApiError::new(
            ErrorCode::OutcomeUnknown,
            "the database did not answer the commit in time: the change may or may not have been kept; look before trying again",
        )),
    }
}

/// One request's span, named after its route template as OpenTelemetry names server spans
/// (`POST /orders/{id}/cancel`), with the `traceparent` it came with as its parent.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        parent: None,
        "request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        method = %request.method(),
        path = %request.uri().path(),
        trace_id = tracing::field::Empty,
    );
    let parent = request
        .headers()
        .get(contract::topics::HEADER_TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    crate::trace::set_parent(&span, parent);
    span
}

/// The method as a metric label: one of the verbs HTTP defines, or `other`, so that a client
/// inventing methods cannot create series at will.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

async fn count_requests(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = crate::metrics::RequestLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    metrics
        .http()
        .answered(&labels, started.elapsed().as_secs_f64());
    response
}

/// The fast tier: the JSON error mapping every API shares, checked on a router in memory with
/// `oneshot`, no broker and no database (the pool is never opened: every request here is
/// answered before a handler would touch it).
#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::{get, post};
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Thing {
        count: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Whole {
        #[serde(deserialize_with = "whole")]
        n: i64,
        #[serde(default, deserialize_with = "whole_opt")]
        m: Option<u16>,
    }

    #[test]
    fn a_whole_number_is_accepted_however_json_spells_it_and_nothing_else_is() {
        let read = |json: &str| serde_json::from_str::<Whole>(json).ok();
        assert_eq!(read(r#"{"n": 474}"#), Some(Whole { n: 474, m: None }));
        assert_eq!(
            read(r#"{"n": 474.0, "m": 5e2}"#),
            Some(Whole {
                n: 474,
                m: Some(500)
            })
        );
        assert_eq!(
            read(r#"{"n": -1, "m": null}"#),
            Some(Whole { n: -1, m: None })
        );
        assert_eq!(read(r#"{"n": 474.5}"#), None);
        assert_eq!(read(r#"{"n": 9223372036854775808}"#), None);
        assert_eq!(read(r#"{"n": 1, "m": 70000}"#), None);
        assert_eq!(read(r#"{"n": "1"}"#), None);
    }

    /// A database that cannot be opened.
    fn observed() -> crate::health::Observed {
        sqlx::any::install_default_drivers();
        let db = sqlx::any::AnyPoolOptions::new()
            .connect_lazy("sqlite:///nonexistent-folder/never-opened.db?mode=ro")
            .expect("a lazy pool");
        crate::health::Observed::new(Metrics::new(), crate::health::Health::new())
            .check(crate::health::Answers::new(db))
    }

    fn router() -> Router {
        let api = Router::new()
            .route("/things", post(|ApiJson(_): ApiJson<Thing>| async { "ok" }))
            .route(
                "/things/{id}",
                get(|ApiPath(_): ApiPath<i64>| async { "ok" }),
            )
            .route(
                "/broken",
                get(|| async { ApiError::internal(anyhow::anyhow!("secret cause")) }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "too late"
                }),
            )
            .route(
                "/slow-commit",
                post(|committing: Committing| async move {
                    committing.start();
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    "kept"
                }),
            );
        let settings = HttpSettings {
            body_limit_bytes: 64,
            request_timeout: Duration::from_millis(200),
            ..HttpSettings::default()
        };
        let watched = observed();
        let metrics = watched.metrics.clone();
        finish_router(api, crate::health::routes(watched), metrics, &settings)
    }

    /// Sends one request and returns the status and the error code of the JSON body.
    async fn answer(request: Request<Body>) -> (StatusCode, String, serde_json::Value) {
        let response = router().oneshot(request).await.expect("an answer");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (status, code, body)
    }

    fn post_json(body: &str) -> Request<Body> {
        Request::post("/things")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("a request")
    }

    #[tokio::test]
    async fn a_known_route_asked_with_another_method_is_a_405_in_the_json_shape() {
        let request = Request::delete("/things").body(Body::empty()).unwrap();
        let (status, code, body) = answer(request).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn readiness_names_what_is_down_without_the_errors_behind_it() {
        let app = crate::health::routes(observed());
        let request = Request::get("/health/ready").body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(
            body["failing"],
            json!({ "database": "the database does not answer" }),
            "{body}"
        );
        // As many as are answered at once all answer.
        let answers =
            futures::future::join_all((0..crate::health::MAX_CONCURRENT_CHECKS).map(|_| {
                let request = Request::get("/health/ready").body(Body::empty()).unwrap();
                app.clone().oneshot(request)
            }))
            .await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().is_ok_and(|r| r.status() == 503))
        );
    }

    #[tokio::test]
    async fn a_request_past_the_time_limit_is_a_503_with_retry_after_never_a_408() {
        let request = Request::get("/slow").body(Body::empty()).unwrap();
        let response = router().oneshot(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(body["error"]["code"], "timed_out", "{body}");
    }

    #[tokio::test]
    async fn a_request_whose_commit_has_started_is_answered_as_the_commit_ends_past_the_limit() {
        let request = Request::post("/slow-commit").body(Body::empty()).unwrap();
        let response = router().oneshot(request).await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("retry-after").is_none());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"kept");
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_is_a_400_malformed_json() {
        let (status, code, _) = answer(post_json("{not json")).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
    }

    #[tokio::test]
    async fn json_of_the_wrong_shape_or_with_unknown_fields_is_a_422_invalid_body() {
        for body in [r#"{"count": "three"}"#, r#"{"count": 3, "extra": 1}"#, "[]"] {
            let (status, code, _) = answer(post_json(body)).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_without_the_json_content_type_is_a_415() {
        let request = Request::post("/things")
            .body(Body::from(r#"{"count": 3}"#))
            .expect("request");
        let (status, code, _) = answer(request).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413() {
        let big = format!(r#"{{"count": 3, "pad": "{}"}}"#, "x".repeat(100));
        let (status, code, _) = answer(post_json(&big)).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
        );
    }

    #[tokio::test]
    async fn an_unknown_route_or_an_impossible_id_is_a_json_404() {
        for path in ["/nowhere", "/things/not-a-number"] {
            let request = Request::get(path).body(Body::empty()).expect("request");
            let (status, code, _) = answer(request).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::NOT_FOUND, "not_found"),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn our_own_failure_is_a_500_that_keeps_its_cause_to_the_log() {
        let request = Request::get("/broken")
            .body(Body::empty())
            .expect("request");
        let (status, code, body) = answer(request).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
        assert!(!body.to_string().contains("secret cause"), "{body}");
    }

    #[tokio::test]
    async fn a_good_request_reaches_its_handler() {
        let response = router()
            .oneshot(post_json(r#"{"count": 3}"#))
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
