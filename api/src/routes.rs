//! The only file that knows every resource: the route table, the router
//! with its layers, and the answers for what no route serves.

use axum::http::header;
use axum::response::{IntoResponse as _, Response};
use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use crate::http::error::ApiError;
use crate::http::{layers, rate_limit};
use crate::ops::{admin, console, dead_deliveries, document, health, payment_story};
use crate::payments::{list, receipts};
use crate::state::{metrics, AppState};
use crate::{operations, payments, webhooks};

/// The route table: every route the API serves, each registered with its
/// OpenAPI description (`utoipa_axum::routes!`), so the router and
/// [`crate::openapi::document`] are built from this one list. A new module adds its
/// `routes()` to one of the two groups.
///
/// With `state`, the keyed routes get the per-key rate limit (which also
/// authenticates); without it, the table is only read for the document.
pub(crate) fn route_table(state: Option<AppState>) -> OpenApiRouter<AppState> {
    // Routes that take an API key: authenticated and rate-limited per key.
    let keyed = OpenApiRouter::default()
        .merge(payments::routes())
        .merge(operations::routes())
        .merge(list::routes())
        .merge(webhooks::routes())
        .merge(admin::routes())
        .merge(dead_deliveries::routes())
        .merge(payment_story::routes());
    let keyed = match state {
        Some(state) => keyed.route_layer(axum::middleware::from_fn_with_state(
            state,
            rate_limit::middleware,
        )),
        None => keyed,
    };
    // Routes without a key.
    let public = OpenApiRouter::default()
        .merge(receipts::routes())
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(document::routes());
    // The operator console: a session cookie, not a key (its own sign-in);
    // HTML pages, in no OpenAPI document.
    keyed.merge(public).merge(console::routes())
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let request_timeout = state.settings.request_timeout;
    let (routes, _) = route_table(Some(state.clone())).split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::map_response(envelope_every_error))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            layers::middleware,
        ))
}

/// Every error answer in the envelope. axum's extractors and layers answer
/// their rejections in plain text (a path segment that is not UTF-8 once
/// decoded, a query string that does not fit, a body limit); this replaces
/// any error answer that is not JSON with the envelope of its status. Inside
/// the request-id layer, so the envelope quotes the request id. JSON error
/// answers are left alone: they are the envelope already, or a deliberate
/// report such as `/readyz`'s. HTML error answers are left alone too: only
/// the operator console makes them, for a person in a browser (no layer or
/// extractor of axum answers HTML).
async fn envelope_every_error(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let is_own =
        content_type.starts_with("application/json") || content_type.starts_with("text/html");
    if !is_error || is_own {
        return response;
    }
    tracing::debug!(
        status = status.as_u16(),
        "an error answer from outside the handlers, put in the envelope"
    );
    let mut enveloped = ApiError::from_status(status).into_response();
    // Headers that still hold for the new body.
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = response.headers().get(&name) {
            enveloped.headers_mut().insert(name, value.clone());
        }
    }
    enveloped
}

async fn not_found() -> ApiError {
    ApiError::not_found("No such endpoint.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::bad_request(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This endpoint does not support that HTTP method.",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    axum::response::IntoResponse::into_response(ApiError::internal(anyhow::anyhow!(
        "handler panicked"
    )))
}
