//! Events: listed, read and redelivered, and rendered from their snapshot
//! with the very functions `GET` uses.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use common::db::operations::OperationRow;
use common::db::payments::PaymentRow;
use common::db::webhooks::{self as db, EventRow};
use common::domain::{EventId, Scope};
use common::webhooks::{EventKind, EVENT_TYPES};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::*;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::extract::Query;
use crate::http::page::{no_such_cursor, Cursor, List, PageSize};
use crate::payments::wire::{Payment, Refund};
use crate::state::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_events))
        .routes(routes!(retrieve_event))
        .routes(routes!(redeliver))
}

/// The largest event body sent. A payment's own bounds (metadata, strings,
/// ten embedded refunds) keep a body far below this; one above it is a bug,
/// logged and never sent.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// An event (`evt_…`): what is sent to endpoints and what `/v1/events`
/// shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    id: String,
    object: &'static str,
    /// `payment.created`, `payment.succeeded`, `payment.failed`,
    /// `payment.captured`, `payment.capture_failed` (the processor refused
    /// a capture), `payment.cancelled`, `payment.void_failed` (it refused a
    /// void), `refund.created`, `refund.succeeded` or `refund.failed`.
    #[serde(rename = "type")]
    kind: String,
    /// Unix seconds.
    created: i64,
    data: EventData,
    request: EventRequest,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventData {
    /// The payment or refund as `GET` showed it when the event happened.
    object: EventObject,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventObject {
    Payment(Box<Payment>),
    Refund(Box<Refund>),
}

/// The API request behind the change; both `null` for the worker's.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventRequest {
    id: Option<String>,
    idempotency_key: Option<String>,
}

fn no_such_event() -> ApiError {
    ApiError::not_found("No such event.")
}

fn event_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse::<EventId>()
        .map(|id| id.0)
        .map_err(|_| no_such_event())
}

/// `GET /v1/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventListQuery {
    /// Events on the page, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// An event id (`evt_…`): the page after it.
    starting_after: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
}

/// `GET /v1/events`: newest first, `type` filter, `starting_after` cursor.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "webhooks",
    operation_id = "list_events",
    summary = "List events",
    description = "The merchant's events, newest first, optionally of one `type`. Events (and \
their delivery attempts) are kept `EVENT_RETENTION_DAYS` days (default 30), then pruned; the \
answer's `Event-Retention-Days` header says how far back this list goes.",
    params(EventListQuery),
    responses((status = 200, description = "A page of events.", body = List<Event>, headers(
        ("Event-Retention-Days" = u32, description = "Days events are kept: the list goes back no further.")
    ))),
    security(("bearer" = ["webhooks:read"]))
)]
async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<EventListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let limit = PageSize::MERCHANT.limit(query.limit)?;
    if let Some(kind) = &query.kind {
        if !EVENT_TYPES.contains(&kind.as_str()) {
            return Err(ApiError::invalid(
                "type",
                "invalid_value",
                format!("`type` must be one of: {}.", EVENT_TYPES.join(", ")),
            ));
        }
    }
    let before = match Cursor::<EventId>::starting_after(query.starting_after.as_deref())? {
        None => None,
        Some(id) => {
            let event = db::find_event(&state.pool, caller.merchant_id, id.0)
                .await?
                .ok_or_else(|| no_such_cursor("starting_after", "events"))?;
            Some(event.seq)
        }
    };
    let rows = db::list_events(
        &state.pool,
        caller.merchant_id,
        query.kind.as_deref(),
        before,
        limit.fetch(),
    )
    .await?;
    let base = &state.settings.public_base_url;
    let list = Json(List::page("/v1/events", rows, limit).try_map(|row| event_json(&row, base))?);
    Ok((
        [(
            "event-retention-days",
            state.settings.event_retention_days.to_string(),
        )],
        list,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "webhooks",
    operation_id = "get_event",
    summary = "Get an event",
    params(("id" = String, Path, description = "The event's id, `evt_…`.")),
    responses(
        (status = 200, description = "The event, as it was sent.", body = Event),
        (status = 404, description = "No such event (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["webhooks:read"]))
)]
async fn retrieve_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let row = db::find_event(&state.pool, caller.merchant_id, event_id(&id)?)
        .await?
        .ok_or_else(no_such_event)?;
    Ok(Json(event_json(&row, &state.settings.public_base_url)?))
}

/// `POST /v1/events/:id/redeliver`: a new delivery to every enabled
/// endpoint that wants the event's type, with a fresh retry schedule; the
/// `webhook-id` stays the event's id. `202` with the event.
#[utoipa::path(
    post,
    path = "/v1/events/{id}/redeliver",
    tag = "webhooks",
    operation_id = "redeliver_event",
    summary = "Send an event again",
    description = "A new delivery to every enabled endpoint that wants the event's type, with a \
fresh retry schedule and the same `webhook-id`.",
    params(("id" = String, Path, description = "The event's id, `evt_…`.")),
    responses(
        (status = 202, description = "Queued for delivery.", body = Event),
        (status = 404, description = "No such event (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["webhooks:write"]))
)]
async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let row = db::find_event(&state.pool, caller.merchant_id, event_id(&id)?)
        .await?
        .ok_or_else(no_such_event)?;
    let (body, _) = send_again(&state, &row, None).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::from_str(&body)?)))
}

/// Sends the event again: a new delivery to each of its merchant's enabled
/// endpoints that want it (to `endpoint` alone, if given and one of them),
/// with a fresh retry schedule, the same body and the same `webhook-id`.
/// `POST /v1/events/:id/redeliver` and an operator's redelivery of a dead
/// delivery ([`crate::ops::admin`]) both come here. The body and the new
/// deliveries (none if the endpoint is disabled meanwhile).
pub(crate) async fn send_again(
    state: &AppState,
    row: &EventRow,
    endpoint: Option<Uuid>,
) -> Result<(String, Vec<Uuid>), ApiError> {
    let body = event_body(row, &state.settings.public_base_url)?;
    let deliveries = db::redeliver(&state.pool, row, &body, endpoint).await?;
    publish(&state.webhook_broker, &deliveries).await;
    Ok((body, deliveries))
}

/// The event as sent (its stored body) or, for one never sent, rendered now
/// from its snapshot: the same JSON either way.
fn event_body(row: &EventRow, base_url: &str) -> Result<String, ApiError> {
    match &row.body {
        Some(body) => Ok(body.clone()),
        None => render(row, base_url).map_err(ApiError::internal),
    }
}

/// [`event_body`], decoded.
fn event_json(row: &EventRow, base_url: &str) -> Result<Value, ApiError> {
    Ok(serde_json::from_str(&event_body(row, base_url)?)?)
}

/// The event's body: `{id, object, type, created, data: {object}, request}`,
/// `data.object` rendered from the snapshot exactly as `GET` renders rows.
pub fn render(row: &EventRow, base_url: &str) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct PaymentSnapshot {
        payment: PaymentRow,
        refunds: Vec<OperationRow>,
    }
    #[derive(Deserialize)]
    struct RefundSnapshot {
        refund: OperationRow,
    }
    let kind: EventKind = row
        .kind
        .parse()
        .map_err(|_| anyhow::anyhow!("an event of an unknown type"))?;
    let object = if kind.is_refund() {
        let snap: RefundSnapshot = serde_json::from_value(row.snapshot.0.clone())?;
        EventObject::Refund(Box::new(Refund::from_row(&snap.refund)))
    } else {
        let snap: PaymentSnapshot = serde_json::from_value(row.snapshot.0.clone())?;
        let payment = Payment::from_row(&snap.payment, base_url).with_refunds(&snap.refunds, false);
        EventObject::Payment(Box::new(payment))
    };
    let event = Event {
        id: EventId(row.id).to_string(),
        object: "event",
        kind: row.kind.clone(),
        created: row.created_at.timestamp(),
        data: EventData { object },
        request: EventRequest {
            id: row.request_id.clone(),
            idempotency_key: row.idempotency_key.clone(),
        },
    };
    let body = serde_json::to_string(&event)?;
    anyhow::ensure!(
        body.len() <= MAX_EVENT_BYTES,
        "the event body is {} bytes, above {MAX_EVENT_BYTES}",
        body.len()
    );
    Ok(body)
}
