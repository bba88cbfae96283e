//! `GET /v1/openapi.json`: the OpenAPI document, as [`crate::openapi`]
//! builds it. The document describes this route too, so it is built from
//! the route table that holds this module; the server builds it once at
//! start and hands it over in the state ([`AppState::openapi`]), and this
//! module imports neither.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(openapi_json))
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "service",
    operation_id = "get_openapi",
    summary = "The OpenAPI 3.1 document of this API",
    description = "No key needed. The same document is committed as `docs/openapi.json`.",
    responses(
        (status = 200, description = "The OpenAPI document.", body = serde_json::Value, content_type = "application/json")
    ),
    security(())
)]
async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi.to_string(),
    )
}
