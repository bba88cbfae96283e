//! Webhook endpoints: register, list, read, delete, rotate the signing secret.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use common::db::webhooks::{self as db, EndpointRow, NewEndpoint};
use common::domain::{EndpointId, Scope};
use common::webhooks::{self as hooks, EndpointStatus, EVENT_TYPES, MAX_ENDPOINTS};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::auth::Caller;
use crate::http::error::{ApiError, DomainResultExt as _, ErrorEnvelope};
use crate::http::page::List;
use crate::http::request::{JsonRequest, Submission, Submitted};
use crate::payments::wire::timestamp;
use crate::state::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(retrieve_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
}

const MAX_DESCRIPTION: usize = 1000;

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

/// The answer of `DELETE /v1/webhook_endpoints/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedEndpoint {
    id: String,
    object: &'static str,
    deleted: bool,
}

fn no_such_endpoint() -> ApiError {
    ApiError::not_found("No such webhook endpoint.")
}

fn endpoint_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse::<EndpointId>()
        .map(|id| id.0)
        .map_err(|_| no_such_endpoint())
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
    let list = List::whole("/v1/webhook_endpoints", rows);
    Ok(Json(list.map(|r| Endpoint::from_row(r, None))))
}

pub(super) async fn find_endpoint(
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
