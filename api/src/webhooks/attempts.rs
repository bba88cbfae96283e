//! Delivery attempts of an endpoint, newest first.

use axum::extract::{Path, State};
use axum::Json;
use common::db::webhooks::{self as db, AttemptRow};
use common::domain::{EventId, Scope};
use common::webhooks::AttemptOutcome;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::*;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::Query;
use crate::http::page::{Cursor, List, PageSize};
use crate::payments::wire::timestamp;
use crate::state::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list_attempts))
}

/// `GET /v1/webhook_endpoints/{id}/deliveries`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttemptListQuery {
    /// Attempts on the page, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// An attempt id (`whatt_…`): the page after it.
    starting_after: Option<String>,
}

/// An attempt's id: `whatt_` and its sequence number, in the one spelling
/// it is shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AttemptId(i64);

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "whatt_{}", self.0)
    }
}

impl std::str::FromStr for AttemptId {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const NOT_AN_ID: &str = "attempt ids look like `whatt_` followed by a number.";
        let id = s
            .strip_prefix("whatt_")
            .and_then(|n| n.parse::<i64>().ok())
            .map(Self)
            .ok_or(NOT_AN_ID)?;
        // `whatt_007` and `whatt_+7` are not how 7 is shown.
        if id.to_string() == s {
            Ok(id)
        } else {
            Err(NOT_AN_ID)
        }
    }
}

/// One attempt to deliver an event, as `…/deliveries` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOut {
    id: String,
    object: &'static str,
    event_id: String,
    event_type: String,
    /// Of this delivery of the event (a redelivery starts at 1 again).
    attempt: i32,
    /// `delivered`, `failed` (an answer other than 2xx), `gone` (410),
    /// `timeout`, `connection_error`, `blocked` (a private address),
    /// `endpoint_disabled` (nothing sent).
    outcome: AttemptOutcome,
    status_code: Option<i32>,
    error: Option<String>,
    duration_ms: i32,
    created_at: String,
}

impl AttemptOut {
    fn from_row(row: AttemptRow) -> Self {
        Self {
            id: AttemptId(row.id).to_string(),
            object: "webhook_attempt",
            event_id: EventId(row.event_id).to_string(),
            event_type: row.event_type,
            attempt: row.attempt,
            outcome: row.outcome,
            status_code: row.status_code,
            error: row.error,
            duration_ms: row.duration_ms,
            created_at: timestamp(row.created_at),
        }
    }
}

/// `GET /v1/webhook_endpoints/:id/deliveries`: every attempt, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints/{id}/deliveries",
    tag = "webhooks",
    operation_id = "list_webhook_deliveries",
    summary = "List an endpoint's delivery attempts",
    description = "Every attempt to deliver an event to this endpoint, newest first.",
    params(("id" = String, Path, description = "The endpoint's id, `we_…`."), AttemptListQuery),
    responses(
        (status = 200, description = "A page of attempts.", body = List<AttemptOut>),
        (status = 404, description = "No such endpoint (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["webhooks:read"]))
)]
async fn list_attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<AttemptListQuery>,
) -> Result<Json<List<AttemptOut>>, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let limit = PageSize::MERCHANT.limit(query.limit)?;
    let endpoint = find_endpoint(&state, &caller, &id).await?;
    let before = Cursor::<AttemptId>::starting_after(query.starting_after.as_deref())?;
    let rows =
        db::list_attempts(&state.pool, endpoint.id, before.map(|a| a.0), limit.fetch()).await?;
    let url = format!("/v1/webhook_endpoints/{id}/deliveries");
    Ok(Json(List::page(url, rows, limit).map(AttemptOut::from_row)))
}

#[cfg(test)]
mod tests {
    use super::AttemptId;

    #[test]
    fn an_attempt_id_has_one_spelling() {
        assert_eq!("whatt_7".parse(), Ok(AttemptId(7)));
        assert_eq!(AttemptId(7).to_string(), "whatt_7");
        for alias in ["whatt_007", "whatt_+7", "whatt_", "7", "whatt_7 ", "evt_7"] {
            assert!(alias.parse::<AttemptId>().is_err(), "{alias}");
        }
    }
}
