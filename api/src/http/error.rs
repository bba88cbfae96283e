//! The API's one error type and its JSON envelope.
//!
//! `{"error": {"type", "code", "message", "param", "request_id"}}` for every
//! error, from validation to a database outage. Internal causes are logged
//! here, once, with their chain, and never sent: the client gets a generic
//! message and the request id to quote.
//!
//! Policy, and where each kind of failure becomes an `ApiError`:
//! - Handlers and extractors return `Result<_, ApiError>`.
//! - A request that does not fit is rejected at the edge, naming its
//!   `param`: the body by [`crate::http::request`] and [`crate::payments::validate`], the
//!   query string by [`crate::extract`]. A domain constructor's
//!   [`DomainError`] says what is wrong but not where, so it becomes a `400`
//!   through [`DomainResultExt::invalid`], which adds the parameter and code.
//! - Database errors convert with `From<sqlx::Error>`: `503` when the
//!   database is unreachable or busy (nothing was written), `500` otherwise.
//!   A violation of a named constraint that a client can cause becomes its
//!   precise answer through [`ResultExt::on_constraint`], and only there.
//! - Plumbing that fails only through a bug (serialising our own types)
//!   converts with `From<serde_json::Error>`; other plumbing wraps an
//!   `anyhow::Error` in [`ApiError::internal`]. Both are `500`s whose cause
//!   is logged here, never sent.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use common::domain::DomainError;
use serde::{Deserialize, Serialize};

use crate::http::request_id::current_request_id;

/// The error families of DESIGN.md §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    PermissionError,
    NotFound,
    IdempotencyError,
    RateLimitError,
    ApiError,
    /// The request was valid and committed; the card processor refused it
    /// (a capture or void answered `402` after `Prefer: wait`).
    ProcessorError,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: ErrorType,
    code: &'static str,
    message: String,
    param: Option<String>,
    /// Logged, never sent.
    source: Option<anyhow::Error>,
    retry_after: Option<u64>,
}

/// Every error answer's body: `{"error": {...}}`. The OpenAPI document
/// describes this very type, so the spec and the answers cannot disagree.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(
    example = json!({"error": {
        "type": "invalid_request_error",
        "code": "invalid_amount",
        "message": "`amount` must be a positive integer in minor units, at most 99999999.",
        "param": "amount",
        "request_id": "req_4f1c2a9e0b7d4c6a8e3f5b1d2c7a9e0f"
    }})
)]
pub struct ErrorEnvelope<'a> {
    pub error: ErrorBody<'a>,
}

/// What went wrong. `type` is the family, `code` the precise reason a client
/// branches on, `param` the request parameter at fault (a dotted path into
/// the body, a query parameter, or a header such as `Idempotency-Key`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// Machine-readable reason, such as `invalid_amount` or
    /// `rate_limit_exceeded`.
    pub code: &'a str,
    /// Human-readable explanation; never echoes the rejected value.
    pub message: &'a str,
    /// The parameter at fault, when there is one.
    pub param: Option<&'a str>,
    /// The `Request-Id` of this answer, to quote when contacting support.
    pub request_id: Option<String>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: ErrorType,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            source: None,
            retry_after: None,
        }
    }

    /// 400 about one parameter.
    pub fn invalid(
        param: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let mut err = Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequestError,
            code,
            message,
        );
        err.param = Some(param.into());
        err
    }

    /// 4xx about the request as a whole.
    pub fn bad_request(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(status, ErrorType::InvalidRequestError, code, message)
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            code,
            message,
        )
    }

    /// 403: the key lacks a scope.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::permission("insufficient_scope", message)
    }

    /// 403 with its own code: the key is authentic but of the wrong kind.
    pub fn permission(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorType::PermissionError,
            code,
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorType::NotFound,
            "resource_missing",
            message,
        )
    }

    pub fn idempotency(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let mut err = Self::new(status, ErrorType::IdempotencyError, code, message);
        err.param = Some("Idempotency-Key".into());
        err
    }

    /// 429: the key's rate limit is spent; nothing was read or written.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimitError,
            "rate_limit_exceeded",
            format!(
                "Too many requests with this API key. Retry after {retry_after_secs} second(s)."
            ),
        );
        err.retry_after = Some(retry_after_secs);
        err
    }

    /// 503: a dependency is down; nothing was written.
    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        source: anyhow::Error,
    ) -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::ApiError,
            code,
            message,
        );
        err.source = Some(source);
        err.retry_after = Some(1);
        err
    }

    /// 500: a bug or an unexpected failure.
    pub fn internal(source: anyhow::Error) -> Self {
        let mut err = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::ApiError,
            "internal_error",
            "An internal error occurred. Quote the request id when contacting support.",
        );
        err.source = Some(source);
        err
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The envelope for an error answer made outside the handlers (an
    /// extractor's rejection, a layer) that is not in the envelope yet. Keeps
    /// the status; says nothing of the original text, which may quote the
    /// request.
    pub fn from_status(status: StatusCode) -> Self {
        use ErrorType::*;
        let (kind, code, message) = match status {
            StatusCode::UNAUTHORIZED => (
                AuthenticationError,
                "authentication_required",
                "This request needs a valid API key: `Authorization: Bearer <key>`.",
            ),
            StatusCode::FORBIDDEN => (
                PermissionError,
                "forbidden",
                "This API key may not do that.",
            ),
            StatusCode::NOT_FOUND => (NotFound, "resource_missing", "No such resource."),
            StatusCode::METHOD_NOT_ALLOWED => (
                InvalidRequestError,
                "method_not_allowed",
                "This endpoint does not support that HTTP method.",
            ),
            StatusCode::REQUEST_TIMEOUT => (
                InvalidRequestError,
                "request_timeout",
                "The request took too long to send or to handle.",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                InvalidRequestError,
                "body_too_large",
                "The request body is too large.",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                InvalidRequestError,
                "unsupported_media_type",
                "The request body must be JSON, sent with `Content-Type: application/json`.",
            ),
            StatusCode::TOO_MANY_REQUESTS => (
                RateLimitError,
                "rate_limit_exceeded",
                "Too many requests. Retry later.",
            ),
            status if status.is_server_error() => (
                ApiError,
                "internal_error",
                "An internal error occurred. Quote the request id when contacting support.",
            ),
            _ => (
                InvalidRequestError,
                "invalid_request",
                "The request could not be read: check its URL (path and query string) and headers.",
            ),
        };
        Self::new(status, kind, code, message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // Unreachable, or busy (a lock or statement timeout): either way the
        // statement did not take effect, and a retry later may succeed.
        if common::db::is_transient(&err) {
            Self::unavailable(
                "database_unavailable",
                "The service cannot reach its database right now; nothing was written. Retry later.",
                err.into(),
            )
        } else {
            Self::internal(err.into())
        }
    }
}

/// Our own values that do not serialise: a bug.
impl From<serde_json::Error> for ApiError {
    fn from(err: serde_json::Error) -> Self {
        Self::internal(err.into())
    }
}

/// Named constraints to precise answers, in one place (as realworld-axum-sqlx
/// does): `db_call().await.on_constraint("operations_one_open_capture_or_void",
/// operation_in_progress)?`. Any other error converts with `From`.
pub trait ResultExt<T> {
    /// `map()` when the error is a violation of the constraint `name`.
    fn on_constraint(self, name: &str, map: impl FnOnce() -> ApiError) -> Result<T, ApiError>;
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> ApiError) -> Result<T, ApiError> {
        self.map_err(|err| {
            if common::db::violated_constraint(&err) == Some(name) {
                map()
            } else {
                err.into()
            }
        })
    }
}

/// A domain value that could not be built from a request parameter: a `400`
/// naming the parameter, with the domain's own explanation.
pub trait DomainResultExt<T> {
    fn invalid(self, param: &str, code: &'static str) -> Result<T, ApiError>;
}

impl<T> DomainResultExt<T> for Result<T, DomainError> {
    fn invalid(self, param: &str, code: &'static str) -> Result<T, ApiError> {
        self.map_err(|err| ApiError::invalid(param, code, err.0))
    }
}

impl ApiError {
    fn log(&self) {
        if let Some(source) = &self.source {
            if self.status.is_server_error() {
                tracing::error!(
                    code = self.code,
                    error = format!("{source:#}"),
                    "request failed"
                );
            }
        }
    }

    /// The status and the message a client may read, the cause logged as
    /// [`IntoResponse`] logs it: for answers that are not the JSON envelope
    /// (the operator console's HTML pages).
    pub fn into_status_and_message(self) -> (StatusCode, String) {
        self.log();
        (self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let body = ErrorEnvelope {
            error: ErrorBody {
                kind: self.kind,
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
                request_id: current_request_id(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        response
    }
}
