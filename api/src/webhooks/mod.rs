//! Webhooks (DESIGN.md §10): endpoints, events, and the relay that gets
//! events on their way.
//!
//! Events are written by database triggers in the transaction of the status
//! change they report (migration `webhooks`), each with a snapshot of the
//! rows at that moment. This module renders a snapshot with the very
//! functions `GET` uses ([`Payment::from_row`], [`Refund::from_row`]), so an
//! event's `data.object` is the object as `GET` showed it then. The relay
//! renders each new event once, stores the body (every retry sends the same
//! bytes) and publishes its deliveries to the webhook queue; the worker
//! signs and sends them. A relay that misses a publish loses nothing: the
//! worker's rescuer publishes deliveries that are late.
//!
//! Creating an endpoint takes no `Idempotency-Key`: its answer carries the
//! secret, which we will not keep in an idempotency record, and a duplicate
//! endpoint is harmless and can be deleted.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use common::db::operations::OperationRow;
use common::db::payments::PaymentRow;
use common::db::webhooks::{self as db, AttemptRow, EndpointRow, EventRow, NewEndpoint};
use common::domain::{EndpointId, EventId, Scope};
use common::queue::Broker;
use common::webhooks::{
    self as hooks, AttemptOutcome, DeliveryJob, EndpointStatus, EventKind, EVENT_TYPES,
    MAX_ENDPOINTS,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::auth::Caller;
use crate::http::error::{ApiError, DomainResultExt as _, ErrorEnvelope};
use crate::http::extract::Query;
use crate::http::request::{JsonRequest, Submission, Submitted};
use crate::payments::wire::{timestamp, Payment, Refund};
use crate::state::AppState;

/// The largest event body sent. A payment's own bounds (metadata, strings,
/// ten embedded refunds) keep a body far below this; one above it is a bug,
/// logged and never sent.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Events the relay renders per transaction.
const RELAY_BATCH: i64 = 100;
/// How often the relay looks for new events.
const RELAY_INTERVAL: Duration = Duration::from_millis(200);
const MAX_DESCRIPTION: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(retrieve_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_attempts))
        .routes(routes!(list_events))
        .routes(routes!(retrieve_event))
        .routes(routes!(redeliver))
}

/// `POST /v1/webhook_endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where to send events: `http(s)`, no credentials, at most 2048
    /// characters, resolving to public addresses only (unless the server
    /// allows private ones).
    #[schema(example = "https://example.com/webhooks")]
    url: String,
    /// Event types to send, or `["*"]` for all.
    #[schema(min_items = 1, max_items = 10, example = json!(["payment.succeeded", "payment.failed"]))]
    events: Vec<String>,
    /// At most 1000 characters.
    #[schema(max_length = 1000)]
    description: Option<String>,
}

impl JsonRequest for CreateEndpoint {}

/// No `Idempotency-Key`: see the module's doc.
impl Submission for CreateEndpoint {
    const SCOPE: Scope = Scope::WebhooksWrite;
    const IDEMPOTENT: bool = false;
}

/// `we_…` as the API shows it; `secret` only in the answers that make one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Endpoint {
    pub id: String,
    pub object: &'static str,
    pub url: String,
    pub events: Vec<String>,
    /// `enabled`, or `disabled` (after a `410 Gone`).
    pub status: EndpointStatus,
    pub disabled_reason: Option<String>,
    pub description: Option<String>,
    pub created_at: String,
    /// `whsec_…`: only in the answers of create and `rotate_secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Endpoint {
    fn from_row(row: EndpointRow, secret: Option<String>) -> Self {
        Self {
            id: EndpointId(row.id).to_string(),
            object: "webhook_endpoint",
            url: row.url,
            events: row.events,
            status: row.status,
            disabled_reason: row.disabled_reason,
            description: row.description,
            created_at: timestamp(row.created_at),
            secret,
        }
    }
}

/// A Stripe-style list.
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    object: &'static str,
    url: String,
    has_more: bool,
    data: Vec<T>,
}

/// The answer of `DELETE /v1/webhook_endpoints/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedEndpoint {
    id: String,
    object: &'static str,
    deleted: bool,
}

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

fn no_such_endpoint() -> ApiError {
    ApiError::not_found("No such webhook endpoint.")
}

fn no_such_event() -> ApiError {
    ApiError::not_found("No such event.")
}

fn endpoint_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse::<EndpointId>()
        .map(|id| id.0)
        .map_err(|_| no_such_endpoint())
}

fn event_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse::<EventId>()
        .map(|id| id.0)
        .map_err(|_| no_such_event())
}

/// `events`: known types or `*`, no repeats.
fn check_event_types(events: &[String]) -> Result<(), ApiError> {
    let bad = |message: String| ApiError::invalid("events", "invalid_value", message);
    if events.is_empty() || events.len() > EVENT_TYPES.len() {
        return Err(bad(format!(
            "`events` lists 1 to {} event types, or [\"*\"].",
            EVENT_TYPES.len()
        )));
    }
    for (i, kind) in events.iter().enumerate() {
        if kind != "*" && !EVENT_TYPES.contains(&kind.as_str()) {
            return Err(bad(format!(
                "Unknown event type; the types are {} (or \"*\" for all).",
                EVENT_TYPES.join(", ")
            )));
        }
        if events[..i].contains(kind) {
            return Err(bad("`events` lists a type twice.".to_owned()));
        }
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints",
    tag = "webhooks",
    operation_id = "create_webhook_endpoint",
    summary = "Register a webhook endpoint",
    description = "Answers `201` with the endpoint and its signing `secret` (`whsec_…`), shown \
only here. A URL that is not `http(s)`, carries credentials, or resolves to a loopback, private, \
link-local or reserved address is `400` (`param: url`). At most 16 endpoints per merchant. Takes \
no `Idempotency-Key`: the answer holds the secret, which is not kept.",
    request_body(content = CreateEndpoint, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered; the secret is shown only now.", body = Endpoint, links(
            ("get" = (operation_id = "get_webhook_endpoint", parameters(("id" = "$response.body#/id")))),
            ("deliveries" = (operation_id = "list_webhook_deliveries", parameters(("id" = "$response.body#/id")))),
            ("rotate" = (operation_id = "rotate_webhook_secret", parameters(("id" = "$response.body#/id")))),
            ("delete" = (operation_id = "delete_webhook_endpoint", parameters(("id" = "$response.body#/id"))))
        ))
    ),
    security(("bearer" = ["webhooks:write"]))
)]
async fn create_endpoint(
    State(state): State<AppState>,
    Submitted {
        body: request,
        sent,
    }: Submitted<CreateEndpoint>,
) -> Result<(StatusCode, Json<Endpoint>), ApiError> {
    let url = hooks::parse_url(&request.url).invalid("url", "invalid_url")?;
    check_event_types(&request.events)?;
    if request
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::invalid(
            "description",
            "invalid_value",
            format!("`description` is at most {MAX_DESCRIPTION} characters."),
        ));
    }
    hooks::check_addresses(&url, state.settings.webhook_allow_private)
        .await
        .invalid("url", "invalid_url")?;
    let secret = hooks::new_secret();
    let id = Uuid::now_v7();
    let row = db::create_endpoint(
        &state.pool,
        &NewEndpoint {
            id,
            merchant_id: sent.caller.merchant_id,
            url: url.as_str(),
            events: &request.events,
            description: request.description.as_deref(),
            // Stored sealed: a dump of the database signs nothing.
            secret: &state.secrets.seal(&secret, id.as_bytes()),
        },
    )
    .await?
    .ok_or_else(|| {
        ApiError::invalid(
            "url",
            "too_many_endpoints",
            format!("A merchant has at most {MAX_ENDPOINTS} webhook endpoints; delete one first."),
        )
    })?;
    Ok((
        StatusCode::CREATED,
        Json(Endpoint::from_row(row, Some(secret))),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints",
    tag = "webhooks",
    operation_id = "list_webhook_endpoints",
    summary = "List webhook endpoints",
    description = "All of the merchant's endpoints (at most 16), newest first, without secrets.",
    responses((status = 200, description = "The endpoints.", body = List<Endpoint>)),
    security(("bearer" = ["webhooks:read"]))
)]
async fn list_endpoints(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<List<Endpoint>>, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let rows = db::list_endpoints(&state.pool, caller.merchant_id).await?;
    Ok(Json(List {
        object: "list",
        url: "/v1/webhook_endpoints".to_owned(),
        has_more: false,
        data: rows
            .into_iter()
            .map(|r| Endpoint::from_row(r, None))
            .collect(),
    }))
}

async fn find_endpoint(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
) -> Result<EndpointRow, ApiError> {
    let id = endpoint_id(raw_id)?;
    db::find_endpoint(&state.pool, caller.merchant_id, id)
        .await?
        .ok_or_else(no_such_endpoint)
}

#[utoipa::path(
    get,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    operation_id = "get_webhook_endpoint",
    summary = "Get a webhook endpoint",
    params(("id" = String, Path, description = "The endpoint's id, `we_…`.")),
    responses(
        (status = 200, description = "The endpoint (without its secret).", body = Endpoint),
        (status = 404, description = "No such endpoint (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["webhooks:read"]))
)]
async fn retrieve_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    caller.require(Scope::WebhooksRead)?;
    let row = find_endpoint(&state, &caller, &id).await?;
    Ok(Json(Endpoint::from_row(row, None)))
}

#[utoipa::path(
    delete,
    path = "/v1/webhook_endpoints/{id}",
    tag = "webhooks",
    operation_id = "delete_webhook_endpoint",
    summary = "Delete a webhook endpoint",
    description = "Deletes it with its delivery log; nothing more is sent to it.",
    params(("id" = String, Path, description = "The endpoint's id, `we_…`.")),
    responses(
        (status = 200, description = "Deleted.", body = DeletedEndpoint),
        (status = 404, description = "No such endpoint (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["webhooks:write"]))
)]
async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeletedEndpoint>, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let uuid = endpoint_id(&id)?;
    if !db::delete_endpoint(&state.pool, caller.merchant_id, uuid).await? {
        return Err(no_such_endpoint());
    }
    Ok(Json(DeletedEndpoint {
        id: EndpointId(uuid).to_string(),
        object: "webhook_endpoint",
        deleted: true,
    }))
}

/// A new secret, shown once; the old one keeps signing (both signatures
/// are sent) for 24 hours, so receivers can switch without losing events.
#[utoipa::path(
    post,
    path = "/v1/webhook_endpoints/{id}/rotate_secret",
    tag = "webhooks",
    operation_id = "rotate_webhook_secret",
    summary = "Rotate an endpoint's signing secret",
    description = "A new secret, shown only in this answer. The old one keeps signing for 24 \
hours (both signatures are sent), so receivers can switch without losing events.",
    params(("id" = String, Path, description = "The endpoint's id, `we_…`.")),
    responses(
        (status = 200, description = "The endpoint with its new secret.", body = Endpoint),
        (status = 404, description = "No such endpoint (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["webhooks:write"]))
)]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    caller.require(Scope::WebhooksWrite)?;
    let uuid = endpoint_id(&id)?;
    let secret = hooks::new_secret();
    let sealed = state.secrets.seal(&secret, uuid.as_bytes());
    let row = db::rotate_secret(&state.pool, caller.merchant_id, uuid, &sealed)
        .await?
        .ok_or_else(no_such_endpoint)?;
    Ok(Json(Endpoint::from_row(row, Some(secret))))
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

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    crate::http::extract::page_limit(limit, 10, 100)
}

fn invalid_cursor(what: &str) -> ApiError {
    ApiError::invalid(
        "starting_after",
        "resource_missing",
        format!("`starting_after` is not one of your {what}."),
    )
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
            id: format!("whatt_{}", row.id),
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
    let limit = page_limit(query.limit)?;
    let endpoint = find_endpoint(&state, &caller, &id).await?;
    let before = query
        .starting_after
        .as_deref()
        .map(|c| {
            c.strip_prefix("whatt_")
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| invalid_cursor("delivery attempts"))
        })
        .transpose()?;
    let mut rows = db::list_attempts(&state.pool, endpoint.id, before, limit + 1).await?;
    let has_more = crate::http::page::take_page(&mut rows, limit);
    Ok(Json(List {
        object: "list",
        url: format!("/v1/webhook_endpoints/{id}/deliveries"),
        has_more,
        data: rows.into_iter().map(AttemptOut::from_row).collect(),
    }))
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
    let limit = page_limit(query.limit)?;
    if let Some(kind) = &query.kind {
        if !EVENT_TYPES.contains(&kind.as_str()) {
            return Err(ApiError::invalid(
                "type",
                "invalid_value",
                format!("`type` must be one of: {}.", EVENT_TYPES.join(", ")),
            ));
        }
    }
    let before = match query.starting_after.as_deref() {
        None => None,
        Some(raw) => {
            let id = raw
                .parse::<EventId>()
                .map_err(|_| invalid_cursor("events"))?;
            let event = db::find_event(&state.pool, caller.merchant_id, id.0)
                .await?
                .ok_or_else(|| invalid_cursor("events"))?;
            Some(event.seq)
        }
    };
    let mut rows = db::list_events(
        &state.pool,
        caller.merchant_id,
        query.kind.as_deref(),
        before,
        limit + 1,
    )
    .await?;
    let has_more = crate::http::page::take_page(&mut rows, limit);
    let base = &state.settings.public_base_url;
    let data = rows
        .iter()
        .map(|row| event_json(row, base))
        .collect::<Result<Vec<_>, _>>()?;
    let list = Json(List {
        object: "list",
        url: "/v1/events".to_owned(),
        has_more,
        data,
    });
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
    let body = event_body(&row, &state.settings.public_base_url)?;
    let deliveries = db::redeliver(&state.pool, &row, &body).await?;
    publish(&state.webhook_broker, &deliveries).await;
    Ok((StatusCode::ACCEPTED, Json(serde_json::from_str(&body)?)))
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

/// Publishes deliveries to the webhook queue. A failed publish is only
/// logged: the worker's rescuer publishes late deliveries.
async fn publish(broker: &Broker, deliveries: &[Uuid]) {
    for id in deliveries {
        let job = DeliveryJob::DeliveryV1 { delivery_id: *id };
        if let Err(err) = broker
            .publish(
                common::queue::Topology::PROCESS_KEY,
                &job.to_bytes(),
                Default::default(),
                None,
            )
            .await
        {
            tracing::warn!(delivery_id = %id, error = %err,
                "publishing a webhook delivery failed; the worker's rescuer will");
            return;
        }
    }
}

/// Renders new events and publishes their deliveries until `shutdown`.
/// How often each API process prunes events past their retention.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Events pruned per statement.
const PRUNE_BATCH: i64 = 1000;

/// Prunes events (with their deliveries and attempts) older than `days`:
/// once at start, then every [`PRUNE_INTERVAL`], in batches until a batch
/// comes back short. Every API process runs it; `SKIP LOCKED` lets them
/// share the work.
pub async fn pruner(pool: PgPool, days: u32, shutdown: CancellationToken) {
    loop {
        let mut pruned = 0;
        loop {
            match db::prune_events(&pool, days, PRUNE_BATCH).await {
                Ok(n) => {
                    pruned += n;
                    if n < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "pruning old events failed; will retry");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, days, "pruned events past their retention");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

pub async fn relay(
    pool: PgPool,
    broker: Arc<Broker>,
    base_url: String,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RELAY_INTERVAL) => {}
        }
        if let Err(err) = relay_once(&pool, &broker, &base_url).await {
            tracing::warn!(error = format!("{err:#}"), "event relay failed; will retry");
        }
    }
}

/// Renders and dispatches every waiting event; returns how many. An event
/// whose snapshot cannot be rendered (a bug) is logged and left for a fixed
/// release; the others go on.
pub async fn relay_once(pool: &PgPool, broker: &Broker, base_url: &str) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let events = db::lock_undispatched(&mut tx, RELAY_BATCH).await?;
        let mut deliveries = Vec::new();
        let mut dispatched = 0;
        for event in &events {
            match render(event, base_url) {
                Ok(body) => {
                    deliveries.extend(db::dispatch(&mut *tx, event.id, &body).await?);
                    dispatched += 1;
                }
                Err(err) => {
                    tracing::error!(event_id = %EventId(event.id), error = format!("{err:#}"),
                    "cannot render an event; it waits for a fixed release")
                }
            }
        }
        tx.commit().await?;
        publish(broker, &deliveries).await;
        total += dispatched;
        if dispatched == 0 || events.len() < usize::try_from(RELAY_BATCH).unwrap_or(0) {
            return Ok(total);
        }
    }
}
