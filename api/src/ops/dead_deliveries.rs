//! Dead webhook deliveries for operators: every merchant's deliveries the
//! worker gave up on (`dead`), listed, and sent again (one, the selected
//! ones, or every one that matches a filter, at most [`MAX_BULK`]).
//!
//! Sending one again is exactly what its merchant's
//! `POST /v1/events/{id}/redeliver` does, for that delivery's event and
//! endpoint only ([`crate::webhooks::send_again`]): a new delivery with a
//! fresh schedule, the same body and `webhook-id`. The dead one stays as
//! it was (its attempts are history) and leaves the list, which shows only
//! dead deliveries not sent again since.
//!
//! Every redelivery writes one `operator_audit` row ([`admin::audit`]), from
//! a script or from the console ([`super::console`]), which calls
//! [`redeliver_dead`] too.

use axum::extract::State;
use axum::Json;
use common::db;
use common::db::webhooks::{DeadDeliveryRow, DeadFilter};
use common::domain::{EndpointId, EventId, PaymentId};
use common::webhooks::{AttemptOutcome, EndpointStatus};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::admin::{self, Audited};
use crate::http::auth::Operator;
use crate::http::error::{ApiError, DomainResultExt as _};
use crate::http::extract::Query;
use crate::http::page::{List, PageSize};
use crate::http::request::{JsonBody, JsonRequest};
use crate::state::AppState;

/// The most dead deliveries one list shows and one redelivery touches.
pub(crate) const MAX_BULK: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list))
        .routes(routes!(redeliver))
}

/// A dead delivery as the operator API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadDelivery {
    /// The delivery's id (a UUID).
    pub id: Uuid,
    /// `evt_…`: also the `webhook-id` it is sent with.
    pub event_id: String,
    /// The event's type, `payment.succeeded` say.
    pub event_type: String,
    pub merchant_id: Uuid,
    /// `pay_…`, the payment the event is about.
    pub payment_id: Option<String>,
    /// `we_…`.
    pub endpoint_id: String,
    pub endpoint_url: String,
    /// A disabled endpoint gets nothing sent again.
    pub endpoint_status: EndpointStatus,
    pub attempts: i32,
    /// When it was given up on.
    pub dead_since: chrono::DateTime<chrono::Utc>,
    pub event_created_at: chrono::DateTime<chrono::Utc>,
    /// How its last attempt ended, with the receiver's status code if it
    /// answered.
    pub last_outcome: Option<AttemptOutcome>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
}

impl From<DeadDeliveryRow> for DeadDelivery {
    fn from(row: DeadDeliveryRow) -> Self {
        Self {
            id: row.id,
            event_id: EventId(row.event_id).to_string(),
            event_type: row.event_type,
            merchant_id: row.merchant_id,
            payment_id: row.payment_id.map(|id| PaymentId(id).to_string()),
            endpoint_id: EndpointId(row.endpoint_id).to_string(),
            endpoint_url: row.url,
            endpoint_status: row.endpoint_status,
            attempts: row.attempts,
            dead_since: row.dead_since,
            event_created_at: row.event_created_at,
            last_outcome: row.last_outcome,
            last_status_code: row.last_status_code,
            last_error: row.last_error,
        }
    }
}

/// Which dead deliveries an operator looks at: by merchant and endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scope {
    pub merchant_id: Option<Uuid>,
    pub endpoint_id: Option<Uuid>,
}

impl Scope {
    /// In words, for an audit row's target.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(merchant) = self.merchant_id {
            parts.push(format!("merchant {merchant}"));
        }
        if let Some(endpoint) = self.endpoint_id {
            parts.push(format!("endpoint {}", EndpointId(endpoint)));
        }
        if parts.is_empty() {
            "no filter".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Up to `limit` dead deliveries in `scope` (only `ids`, if given), the
/// longest dead first.
pub(crate) async fn list_dead(
    state: &AppState,
    scope: Scope,
    limit: usize,
) -> Result<Vec<DeadDelivery>, ApiError> {
    let rows = dead_rows(state, scope, None, limit).await?;
    Ok(rows.into_iter().map(DeadDelivery::from).collect())
}

async fn dead_rows(
    state: &AppState,
    scope: Scope,
    ids: Option<&[Uuid]>,
    limit: usize,
) -> Result<Vec<DeadDeliveryRow>, ApiError> {
    let filter = DeadFilter {
        merchant_id: scope.merchant_id,
        endpoint_id: scope.endpoint_id,
        ids,
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(db::webhooks::dead_deliveries(&state.pool, &filter, limit).await?)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Dead deliveries to show, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only this merchant's.
    merchant_id: Option<Uuid>,
    /// Only those to this endpoint (`we_…`).
    endpoint_id: Option<String>,
}

fn endpoint_id(raw: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    raw.map(|raw| raw.parse::<EndpointId>().map(|id| id.0))
        .transpose()
        .invalid("endpoint_id", "invalid_endpoint_id")
}

#[utoipa::path(
    get,
    path = "/v1/admin/webhook-deliveries/dead",
    tag = "operators",
    operation_id = "list_dead_webhook_deliveries",
    summary = "List dead webhook deliveries",
    description = "Deliveries the worker gave up on and nobody has sent again since, every \
merchant's (so operator keys only), the longest dead first.",
    params(ListQuery),
    responses(
        (status = 200, description = "The dead deliveries.", body = List<DeadDelivery>)
    ),
    security(("bearer" = ["admin"]))
)]
async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<ListQuery>,
) -> Result<Json<List<DeadDelivery>>, ApiError> {
    let limit = PageSize::OPERATOR.limit(query.limit)?;
    let scope = Scope {
        merchant_id: query.merchant_id,
        endpoint_id: endpoint_id(query.endpoint_id.as_deref())?,
    };
    let rows = list_dead(&state, scope, limit.fetch_len()).await?;
    Ok(Json(List::page(
        "/v1/admin/webhook-deliveries/dead",
        rows,
        limit,
    )))
}

/// Which dead deliveries to send again: `all` (every match of
/// `merchant_id` and `endpoint_id`, at most 1000), or `delivery_ids`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverRequest {
    /// Every dead delivery that matches (not with `delivery_ids`).
    all: Option<bool>,
    /// These dead deliveries (1 to 1000 ids).
    #[schema(min_items = 1, max_items = 1000)]
    delivery_ids: Option<Vec<Uuid>>,
    /// Only this merchant's.
    merchant_id: Option<Uuid>,
    /// Only those to this endpoint (`we_…`).
    endpoint_id: Option<String>,
}

impl JsonRequest for RedeliverRequest {}

/// What a redelivery did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RedeliverReport {
    /// The dead deliveries whose event was sent again (each got a new
    /// delivery).
    pub redelivered: Vec<Uuid>,
    /// Asked for but not sent: no longer dead or already sent again, or
    /// their endpoint is disabled.
    pub not_sent: usize,
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhook-deliveries/redeliver",
    tag = "operators",
    operation_id = "redeliver_dead_webhook_deliveries",
    summary = "Send dead webhook deliveries again",
    description = "For each selected dead delivery, what `POST /v1/events/{id}/redeliver` does \
for its event and endpoint: a new delivery with a fresh retry schedule, the same body and \
`webhook-id`. Send either `\"all\": true` or `delivery_ids`.",
    request_body(content = RedeliverRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What was sent again.", body = RedeliverReport)
    ),
    security(("bearer" = ["admin"]))
)]
async fn redeliver(
    State(state): State<AppState>,
    operator: Operator,
    JsonBody { value: request, .. }: JsonBody<RedeliverRequest>,
) -> Result<Json<RedeliverReport>, ApiError> {
    let scope = Scope {
        merchant_id: request.merchant_id,
        endpoint_id: endpoint_id(request.endpoint_id.as_deref())?,
    };
    let ids = match (request.all.unwrap_or(false), request.delivery_ids) {
        (true, None) => None,
        (false, Some(ids)) if !ids.is_empty() && ids.len() <= MAX_BULK => Some(ids),
        _ => {
            return Err(ApiError::invalid(
                "all",
                "invalid_selection",
                format!("Send either `\"all\": true` or 1 to {MAX_BULK} `delivery_ids`."),
            ))
        }
    };
    let target = match &ids {
        None => format!("every match of {}", scope.describe()),
        Some(ids) => describe_ids(ids),
    };
    let done = redeliver_dead(&state, &operator, scope, ids.as_deref(), &target).await?;
    Ok(Json(done.value))
}

/// Delivery ids as an audit row's target names them (the first ten, then
/// how many more).
pub(crate) fn describe_ids(ids: &[Uuid]) -> String {
    let mut sorted: Vec<String> = ids.iter().map(|id| format!("delivery {id}")).collect();
    sorted.sort();
    sorted.dedup();
    let more = sorted.len().saturating_sub(10);
    sorted.truncate(10);
    let mut target = sorted.join(", ");
    if more > 0 {
        target.push_str(&format!(" and {more} more"));
    }
    target
}

/// Sends the dead deliveries in `scope` (only `ids`, if given; at most
/// [`MAX_BULK`]) again, and audits it (`target` says what was asked for).
pub(crate) async fn redeliver_dead(
    state: &AppState,
    operator: &Operator,
    scope: Scope,
    ids: Option<&[Uuid]>,
    target: &str,
) -> Result<Audited<RedeliverReport>, ApiError> {
    let mut redelivered = Vec::new();
    let mut asked = 0;
    let outcome = async {
        let dead = dead_rows(state, scope, ids, MAX_BULK).await?;
        asked = ids.map_or(dead.len(), <[Uuid]>::len);
        for delivery in &dead {
            if send_one_again(state, delivery).await? {
                redelivered.push(delivery.id);
            }
        }
        Ok::<_, ApiError>(())
    }
    .await;
    let not_sent = asked.saturating_sub(redelivered.len());
    let result = match &outcome {
        Ok(()) => format!("redelivered {}, not sent {not_sent}", redelivered.len()),
        Err(err) => format!(
            "failed ({}) after redelivering {}",
            err.status(),
            redelivered.len()
        ),
    };
    let audit_id = admin::audit(
        state,
        Some(operator.key_id),
        "webhooks.redeliver",
        target,
        &result,
    )
    .await;
    outcome?;
    tracing::info!(
        redelivered = redelivered.len(),
        not_sent,
        actor = %format!("api-key:{}", operator.key_id),
        "dead webhook deliveries sent again by an operator"
    );
    Ok(Audited {
        value: RedeliverReport {
            redelivered,
            not_sent,
        },
        audit_id,
    })
}

/// One dead delivery's event, sent again to its endpoint; whether a new
/// delivery was made (not if the event is gone or the endpoint disabled).
async fn send_one_again(state: &AppState, delivery: &DeadDeliveryRow) -> Result<bool, ApiError> {
    let event =
        db::webhooks::find_event(&state.pool, delivery.merchant_id, delivery.event_id).await?;
    let Some(event) = event else {
        return Ok(false);
    };
    let (_, new) = crate::webhooks::send_again(state, &event, Some(delivery.endpoint_id)).await?;
    Ok(!new.is_empty())
}
