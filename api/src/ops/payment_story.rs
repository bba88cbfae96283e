//! Operator endpoints for one payment of any merchant: its whole story
//! (`GET /v1/admin/payments/{id}`: the payment, every status change with who
//! made it and why, its captures, voids and refunds, its events with every
//! delivery attempt), and finding payments by order id
//! (`GET /v1/admin/payments?order_id=…`).
//!
//! The console's payment page shows [`story`] and its search calls
//! [`find_by_order_id`]: the same functions as these handlers, as with every
//! operator view (see [`super::admin`]). Reading is not audited; only
//! actions are.
//!
//! The answer is a wire type of its own, built field by field from the rows
//! (`payments`, `payment_status_history`, `operations`, the event views), so
//! a column added to a table never reaches operators by accident. The card
//! token and the customer's personal data are not in it: an operator
//! looking into a stuck job needs what happened, not who paid.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use common::db;
use common::db::console_views::EventAttempt;
use common::domain::{Kind, PaymentId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::auth::Operator;
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::http::page::List;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Operations of each kind a story shows (newest first).
const MAX_OPERATIONS: i64 = 100;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(find_handler))
        .routes(routes!(story_handler))
}

/// A payment as an operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoryPayment {
    /// `pay_…`.
    pub id: String,
    pub merchant_id: Uuid,
    pub status: String,
    /// In minor units.
    pub amount: i64,
    pub currency: String,
    pub order_id: Option<String>,
    pub description: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// Since when the outcome of the latest processor call is unknown.
    pub outcome_unknown_since: Option<DateTime<Utc>>,
    /// Since when it waits for an operator.
    pub held_at: Option<DateTime<Utc>>,
    /// When its next step is due (`null` once terminal).
    pub due_at: Option<DateTime<Utc>>,
    /// The worker holding, or that last held, its claim.
    pub claimed_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One status change: from what to what, who made it, why, when.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusChange {
    pub from_status: Option<String>,
    pub to_status: String,
    /// `api`, `worker:<id>`, `api-key:<uuid>` (an operator), `rescuer`, …
    pub actor: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A capture, void or refund of the payment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoryOperation {
    pub id: Uuid,
    /// `capture`, `void` or `refund`.
    pub kind: String,
    pub status: String,
    pub amount: i64,
    pub requested_by: String,
    pub reason: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Everything that happened to one payment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PaymentStory {
    /// Always `payment_story`.
    #[schema(example = "payment_story")]
    pub object: &'static str,
    pub payment: StoryPayment,
    /// Oldest first.
    pub history: Vec<StatusChange>,
    /// Newest first, each kind at most 100.
    pub operations: Vec<StoryOperation>,
    /// The payment's events (and its operations'), oldest first, each with
    /// every delivery attempt (at most 500 rows).
    pub events: Vec<EventAttempt>,
}

/// The story of payment `id`; `None` when there is no such payment.
pub(crate) async fn story(
    state: &AppState,
    id: PaymentId,
) -> Result<Option<PaymentStory>, ApiError> {
    let Some(row) = db::payments::find(&state.pool, id).await? else {
        return Ok(None);
    };
    let history = db::payments::history(&state.pool, id)
        .await?
        .into_iter()
        .map(|h| StatusChange {
            from_status: h.from_status,
            to_status: h.to_status,
            actor: h.actor,
            reason: h.reason,
            at: h.created_at,
        })
        .collect();
    let mut operations = Vec::new();
    for kind in [Kind::Capture, Kind::Void, Kind::Refund] {
        let rows =
            db::operations::list_for_payment(&state.pool, id, kind, None, MAX_OPERATIONS).await?;
        operations.extend(rows.into_iter().map(|o| StoryOperation {
            id: o.id.0,
            kind: o.kind.as_str().to_owned(),
            status: o.status.as_str().to_owned(),
            amount: o.amount,
            requested_by: o.requested_by,
            reason: o.reason,
            attempts: o.attempts,
            last_error: o.last_error,
            failure_code: o.failure_code,
            failure_message: o.failure_message,
            created_at: o.created_at,
            finished_at: o.finished_at,
        }));
    }
    operations.sort_by_key(|o| std::cmp::Reverse(o.created_at));
    let events = db::console_views::payment_events(&state.pool, id.0).await?;
    Ok(Some(PaymentStory {
        object: "payment_story",
        payment: StoryPayment {
            id: id.to_string(),
            merchant_id: row.merchant_id,
            status: row.status.as_str().to_owned(),
            amount: row.amount,
            currency: row.currency.as_str().to_owned(),
            order_id: row.order_id,
            description: row.description,
            attempts: row.attempts,
            last_error: row.last_error,
            failure_code: row.failure_code,
            failure_message: row.failure_message,
            outcome_unknown_since: row.outcome_unknown_since,
            held_at: row.held_at,
            due_at: row.due_at,
            claimed_by: row.claimed_by,
            created_at: row.created_at,
            finished_at: row.finished_at,
        },
        history,
        operations,
        events,
    }))
}

/// Payments [`find_by_order_id`] shows.
const FOUND: usize = 50;

/// The ids (`pay_…`) of every merchant's payments with this order id,
/// newest first, at most 50. An order id is 1 to 255 characters without
/// control characters (as a payment stores it; PostgreSQL refuses NUL).
pub(crate) async fn find_by_order_id(
    state: &AppState,
    order_id: &str,
) -> Result<List<PaymentId>, ApiError> {
    let length = order_id.chars().count();
    if !(1..=255).contains(&length) || order_id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "order_id",
            "invalid_order_id",
            "`order_id` is 1 to 255 characters, none of them control characters.",
        ));
    }
    // One more than shown: whether there are more.
    let fetch = i64::try_from(FOUND + 1).unwrap_or(i64::MAX);
    let ids = db::console_views::payments_by_order_id(&state.pool, order_id, fetch).await?;
    let more = ids.len() > FOUND;
    let shown = ids.into_iter().take(FOUND).map(PaymentId).collect();
    Ok(List::cut("/v1/admin/payments", shown, more))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FindQuery {
    /// The merchant's order id (1 to 255 characters, no control
    /// characters), any merchant's.
    order_id: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/payments",
    tag = "operators",
    operation_id = "find_payments",
    summary = "Find payments by order id",
    description = "Every merchant's payments with this `order_id`, newest first: at most 50, \
`has_more` when there are others.",
    params(FindQuery),
    responses(
        (status = 200, description = "Their ids.", body = List<String>)
    ),
    security(("bearer" = ["admin"]))
)]
async fn find_handler(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<FindQuery>,
) -> Result<Json<List<String>>, ApiError> {
    let found = find_by_order_id(&state, &query.order_id).await?;
    Ok(Json(found.map(|id| id.to_string())))
}

#[utoipa::path(
    get,
    path = "/v1/admin/payments/{id}",
    tag = "operators",
    operation_id = "get_payment_story",
    summary = "A payment's whole story",
    description = "Any merchant's payment: its status history (who, when, why), its \
operations, and its events with every delivery attempt.",
    params(
        ("id" = String, Path, description = "The payment's id, `pay_` and a lower-case UUID.", example = "pay_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a")
    ),
    responses(
        (status = 200, description = "The story.", body = PaymentStory),
        (status = 404, description = "No such payment.", body = crate::http::error::ErrorEnvelope)
    ),
    security(("bearer" = ["admin"]))
)]
async fn story_handler(
    State(state): State<AppState>,
    _operator: Operator,
    Path(id): Path<String>,
) -> Result<Json<PaymentStory>, ApiError> {
    let no_such = || ApiError::not_found("No such payment.");
    let id: PaymentId = id.parse().map_err(|_| no_such())?;
    story(&state, id).await?.map(Json).ok_or_else(no_such)
}
