//! `/healthz` (the process is alive) and `/readyz` (its dependencies answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    operation_id = "healthz",
    summary = "Liveness",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Value)),
    security(())
)]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database and the broker answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    operation_id = "readyz",
    summary = "Readiness",
    responses(
        (status = 200, description = "Ready: a report of each dependency.", body = Value),
        (status = 503, description = "Not ready: the same report, naming what is down.", body = Value)
    ),
    security(())
)]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (ready, body) = common::health::readiness(&state.pool, &state.broker).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
