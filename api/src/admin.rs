//! Operator endpoints: the dead-letter queue over HTTP (`worker dlq list` and
//! `worker dlq replay` without a shell).
//!
//! The dead-letter queue is shared by every merchant, so these endpoints take
//! an operator key ([`Operator`]: made by `api keys create-operator`, bound to
//! no merchant). A merchant's key is refused with `403` whatever its scopes:
//! it must never list or replay another merchant's jobs.

use std::collections::HashSet;

use axum::extract::State;
use axum::Json;
use common::dead_letters::{self, Age, DeadLetter, Filter, ReplayReport};
use common::domain::PaymentId;
use serde::Deserialize;

use crate::auth::Operator;
use crate::error::{ApiError, DomainResultExt as _};
use crate::extract::Query;
use crate::request::{JsonBody, JsonRequest};
use crate::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const MAX_LIST: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list))
        .routes(routes!(replay))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Dead letters to show, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The dead letters, oldest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    /// Always `list`.
    #[schema(example = "list")]
    object: &'static str,
    data: Vec<DeadLetter>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/dead-letters",
    tag = "operators",
    operation_id = "list_dead_letters",
    summary = "List dead letters",
    description = "Jobs the workers gave up on, every merchant's (so operator keys only).",
    params(ListQuery),
    responses(
        (status = 200, description = "The dead letters.", body = DeadLetterList)
    ),
    security(("bearer" = ["admin"]))
)]
async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<ListQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let limit = crate::extract::page_limit(query.limit, 100, MAX_LIST)?;
    let letters = dead_letters::list(&state.broker, limit)
        .await
        .map_err(dependency_error)?;
    Ok(Json(DeadLetterList {
        object: "list",
        data: letters,
    }))
}

/// Which dead letters to replay: `all`, or `payment_ids`; optionally only
/// those with `reason`, or older than `older_than_secs` (at most ten years:
/// [`dead_letters::MAX_AGE`]).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Replay every dead letter (not with `payment_ids`).
    all: Option<bool>,
    /// Replay these payments' dead letters (1 to 1000 ids, `pay_…`).
    #[schema(min_items = 1, max_items = 1000)]
    payment_ids: Option<Vec<String>>,
    /// Only dead letters with this reason.
    reason: Option<common::dead_letters::DeadLetterReason>,
    /// Only dead letters older than this many seconds (at most ten years).
    #[schema(maximum = 315_360_000)]
    older_than_secs: Option<u64>,
}

impl JsonRequest for ReplayRequest {}

#[utoipa::path(
    post,
    path = "/v1/admin/dead-letters/replay",
    tag = "operators",
    operation_id = "replay_dead_letters",
    summary = "Replay dead letters",
    description = "Moves the selected dead letters back to the main queue and their payments \
back to `pending`. Send either `\"all\": true` or `payment_ids`.",
    request_body(content = ReplayRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What was replayed, dropped and kept.", body = ReplayReport)
    ),
    security(("bearer" = ["admin"]))
)]
async fn replay(
    State(state): State<AppState>,
    operator: Operator,
    JsonBody { value: request, .. }: JsonBody<ReplayRequest>,
) -> Result<Json<ReplayReport>, ApiError> {
    let ids = match (request.all.unwrap_or(false), request.payment_ids) {
        (true, None) => None,
        (false, Some(ids)) if !ids.is_empty() && ids.len() <= MAX_LIST => Some(
            ids.iter()
                .map(|id| id.parse::<PaymentId>())
                .collect::<Result<HashSet<_>, _>>()
                .invalid("payment_ids", "invalid_payment_id")?,
        ),
        _ => {
            return Err(ApiError::invalid(
                "all",
                "invalid_selection",
                format!("Send either `\"all\": true` or 1 to {MAX_LIST} `payment_ids`."),
            ))
        }
    };
    let older_than = request
        .older_than_secs
        .map(Age::from_secs)
        .transpose()
        .map_err(|e| {
            ApiError::invalid(
                "older_than_secs",
                "invalid_older_than",
                format!("`older_than_secs`: {e}."),
            )
        })?;
    let filter = Filter {
        ids,
        reason: request.reason,
        older_than,
    };
    let actor = format!("api-key:{}", operator.key_id);
    let report = dead_letters::replay(&state.pool, &state.broker, &filter, &actor)
        .await
        .map_err(dependency_error)?;
    tracing::info!(
        replayed = report.replayed.len(),
        dropped = report.dropped.len(),
        actor = %actor,
        "dead letters replayed over HTTP"
    );
    Ok(Json(report))
}

/// A failure of the broker or the database during an operator action: 503
/// when a dependency is unreachable, 500 otherwise.
fn dependency_error(err: anyhow::Error) -> ApiError {
    let unavailable = err.chain().any(|cause| {
        cause.downcast_ref::<lapin::Error>().is_some()
            || cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(common::db::is_unavailable)
            || cause
                .downcast_ref::<common::queue::PublishError>()
                .is_some()
            || cause
                .downcast_ref::<common::queue::BrokerTimeout>()
                .is_some()
    });
    if unavailable {
        ApiError::unavailable(
            "dependency_unavailable",
            "The broker or the database is unreachable; nothing was changed that cannot be retried.",
            err,
        )
    } else {
        ApiError::internal(err)
    }
}
