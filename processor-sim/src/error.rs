//! The simulator's error answers: one JSON envelope,
//! `{"error":{"code","message"}}`, like a real gateway's, so clients parse
//! failures the same way whatever went wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// A request the simulator answers with an error status. Messages are written
/// for the client and never carry a card token.
#[derive(Debug)]
pub(crate) struct SimError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl SimError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400`: the `Idempotency-Key` header is absent or empty.
    pub(crate) fn missing_idempotency_key() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "the Idempotency-Key header is required and must not be empty",
        )
    }

    /// `400`: the body is not the expected JSON.
    pub(crate) fn invalid_json(cause: &serde_json::Error) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON for this endpoint: {cause}"),
        )
    }

    /// `400`: the JSON parsed but a value is out of range.
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// `503`: the outage fault is on; nothing was charged.
    pub(crate) fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "processor_unavailable",
            "the processor is unavailable; retry later with the same Idempotency-Key",
        )
    }

    /// `500`: the error fault fired; nothing was charged.
    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "processor_error",
            "the processor failed before charging; retry with the same Idempotency-Key",
        )
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        let envelope = Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, Json(envelope)).into_response()
    }
}
