//! The outermost layer of every request: its id, its span and its time
//! bound.
//!
//! A `Request-Id` on every response ([`super::request_id`]), and a tracing
//! span that carries it. Every request is also bounded in time here
//! (`REQUEST_TIMEOUT`), body reading included, so a client that trickles
//! its body cannot hold a connection and a handler forever.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use tracing::Instrument as _;

use crate::http::error::ApiError;
use crate::http::request_id::{self, HEADER};

/// The request's id, span and time bound (`timeout`).
pub async fn middleware(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let id = request_id::new_id();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
        merchant_id = tracing::field::Empty,
        payment_id = tracing::field::Empty,
    );
    let header = HeaderValue::from_str(&id).ok();
    let started = std::time::Instant::now();
    let handled = async move {
        match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::bad_request(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request took too long to send or to handle.",
            )
            .into_response(),
        }
    };
    let mut response = request_id::scope(id, handled)
        .instrument(span.clone())
        .await;
    span.record("status", response.status().as_u16());
    tracing::info!(
        parent: &span,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request finished"
    );
    if let Some(header) = header {
        response.headers_mut().insert(HEADER, header);
    }
    response
}
