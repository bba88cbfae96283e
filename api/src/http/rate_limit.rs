//! Rate limits per API key (DESIGN.md §11): a token bucket per key, checked
//! before the handler runs, so a refused request writes nothing.
//!
//! The bucket is `governor`'s keyed GCRA limiter (the generic cell-rate
//! algorithm, equivalent to a token bucket): `RATE_LIMIT_BURST` requests at
//! once, refilled at `RATE_LIMIT_PER_SECOND`. It lives in this process's
//! memory, so the limit is per API process: behind a load balancer with N
//! processes a key can send up to N times the limit (see the README).
//!
//! Every answer of a keyed route carries `RateLimit-Limit` (the burst),
//! `RateLimit-Remaining` (requests left right now) and `RateLimit-Reset`
//! (seconds until the bucket is full again). Over the limit the answer is
//! `429` in the error envelope (`rate_limit_error`, `rate_limit_exceeded`)
//! with `Retry-After` in whole seconds.
//!
//! The limiter keeps one small state per key it has seen; only authenticated
//! keys reach it (a made-up key is refused with `401` before), and a sweeper
//! forgets keys whose bucket is full again, so memory is bounded by the keys
//! active in the last moments.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::http::auth::{self, AuthenticatedKey};
use crate::http::error::ApiError;
use crate::state::limiter::Decision;
use crate::state::AppState;

pub const LIMIT_HEADER: &str = "ratelimit-limit";
pub const REMAINING_HEADER: &str = "ratelimit-remaining";
pub const RESET_HEADER: &str = "ratelimit-reset";

fn write_headers(decision: &Decision, headers: &mut HeaderMap) {
    headers.insert(LIMIT_HEADER, HeaderValue::from(decision.limit));
    headers.insert(REMAINING_HEADER, HeaderValue::from(decision.remaining));
    headers.insert(RESET_HEADER, HeaderValue::from(decision.reset_secs));
}

/// Authenticates the request, then takes one request from its key's bucket.
/// Runs before the handler: a request without a live key gets its `401`
/// here, and a refused one its `429`, before anything is read or written.
/// The authenticated key is handed to the handler's `Caller` or `Operator`
/// extractor, so the key is looked up once.
pub async fn middleware(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let key = match auth::authenticate(request.headers(), &state).await {
        Ok(key) => key,
        Err(err) => return err.into_response(),
    };
    let decision = state.limiter.check(key.id);
    let mut response = if decision.allowed {
        request.extensions_mut().insert(AuthenticatedKey(key));
        next.run(request).await
    } else {
        tracing::info!(key_id = %key.id, "rate limit exceeded");
        ApiError::rate_limited(decision.retry_after_secs).into_response()
    };
    write_headers(&decision, response.headers_mut());
    response
}
