//! Operator endpoints: the dead-letter queue over HTTP (`worker dlq list`,
//! `replay` and `purge` without a shell), the audit log, and the read models
//! the operator console shows (overview, needs attention; a payment's whole
//! story is in [`super::payment_story`]).
//!
//! The console ([`super::console`]) calls the same functions as these
//! handlers ([`replay_dead_letters`], [`purge_dead_letters`], …), so every
//! action, from a script or a browser, goes through one place and writes one
//! `operator_audit` row (who, what, on what, with what result).
//!
//! The dead-letter queue is shared by every merchant, so these endpoints take
//! an operator key ([`Operator`]: made by `api keys create-operator`, bound to
//! no merchant). A merchant's key is refused with `403` whatever its scopes:
//! it must never list or replay another merchant's jobs.

use std::collections::HashSet;

use axum::extract::State;
use axum::Json;
use common::db;
use common::db::audit::AuditRow;
use common::db::console_views::{FailingEndpoint, Minute, StatusCount, StuckPayment, WorkerRow};
use common::dead_letters::{self, Age, DeadLetter, DeadLetterReason, Filter, ReplayReport};
use common::domain::PaymentId;
use serde::Deserialize;
use uuid::Uuid;

use crate::http::auth::Operator;
use crate::http::error::{ApiError, DomainResultExt as _};
use crate::http::extract::Query;
use crate::http::page::{List, PageSize};
use crate::http::request::{JsonBody, JsonRequest};
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const MAX_LIST: usize = 1000;
/// The dead letters' list, as its `url` shows it.
const URL: &str = "/v1/admin/dead-letters";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list))
        .routes(routes!(replay))
        .routes(routes!(purge))
        .routes(routes!(audit_log))
        .routes(routes!(overview_handler))
        .routes(routes!(attention_handler))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Dead letters to show, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only dead letters with this reason.
    reason: Option<DeadLetterReason>,
    /// Only dead letters older than this many seconds (at most ten years).
    #[param(maximum = 315_360_000)]
    older_than_secs: Option<u64>,
    /// Only this merchant's dead letters.
    merchant_id: Option<Uuid>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/dead-letters",
    tag = "operators",
    operation_id = "list_dead_letters",
    summary = "List dead letters",
    description = "Jobs the workers gave up on, every merchant's (so operator keys only), \
oldest first. The queue is read without consuming, at most 1000 letters; `has_more` is true \
when more match than `limit` or the queue holds more than that.",
    params(ListQuery),
    responses(
        (status = 200, description = "The dead letters.", body = List<DeadLetter>)
    ),
    security(("bearer" = ["admin"]))
)]
async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<ListQuery>,
) -> Result<Json<List<DeadLetter>>, ApiError> {
    let limit = PageSize::OPERATOR.limit(query.limit)?;
    let selection = Selection {
        reason: query.reason,
        older_than: older_than(query.older_than_secs)?,
        merchant_id: query.merchant_id,
    };
    let (letters, unexamined) = examine_dead_letters(&state, &selection, limit.fetch_len()).await?;
    let page = List::page(URL, letters, limit);
    let has_more = page.has_more() || unexamined;
    Ok(Json(List::cut(URL, page.into_data(), has_more)))
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
    let filter = Filter {
        ids,
        reason: request.reason,
        older_than: older_than(request.older_than_secs)?,
    };
    let target = match &filter.ids {
        None => "all dead letters".to_owned(),
        Some(ids) => describe_ids(ids),
    };
    let report = replay_dead_letters(&state, &operator, &filter, &target).await?;
    Ok(Json(report.value))
}

fn older_than(secs: Option<u64>) -> Result<Option<Age>, ApiError> {
    secs.map(Age::from_secs).transpose().map_err(|e| {
        ApiError::invalid(
            "older_than_secs",
            "invalid_older_than",
            format!("`older_than_secs`: {e}."),
        )
    })
}

/// `pay_… ` ids, as an audit row's target names them (the first ten, then
/// how many more).
pub(crate) fn describe_ids(ids: &HashSet<PaymentId>) -> String {
    let mut sorted: Vec<String> = ids.iter().map(ToString::to_string).collect();
    sorted.sort();
    let more = sorted.len().saturating_sub(10);
    sorted.truncate(10);
    let mut target = sorted.join(", ");
    if more > 0 {
        target.push_str(&format!(" and {more} more"));
    }
    target
}

/// Which dead letters an operator looks at: by reason, age and merchant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    pub reason: Option<DeadLetterReason>,
    pub older_than: Option<Age>,
    pub merchant_id: Option<Uuid>,
}

impl Selection {
    fn matches(&self, letter: &DeadLetter) -> bool {
        let reason = self.reason.is_none_or(|reason| letter.reason == reason);
        let merchant = self
            .merchant_id
            .is_none_or(|merchant| letter.merchant_id == Some(merchant));
        let old = self.older_than.is_none_or(|age| {
            let limit = chrono::TimeDelta::from_std(age.get())
                .ok()
                .and_then(|age| chrono::Utc::now().checked_sub_signed(age));
            matches!((letter.dead_lettered_at, limit), (Some(at), Some(limit)) if at <= limit)
        });
        reason && merchant && old
    }
}

/// Up to `limit` dead letters matching `selection`, oldest first (the
/// queue is read without consuming: at most [`MAX_LIST`] are examined).
pub(crate) async fn list_dead_letters(
    state: &AppState,
    selection: &Selection,
    limit: usize,
) -> Result<Vec<DeadLetter>, ApiError> {
    Ok(examine_dead_letters(state, selection, limit).await?.0)
}

/// [`list_dead_letters`], and whether the queue holds letters past the
/// [`MAX_LIST`] examined (so more may match).
async fn examine_dead_letters(
    state: &AppState,
    selection: &Selection,
    limit: usize,
) -> Result<(Vec<DeadLetter>, bool), ApiError> {
    let mut letters = dead_letters::list(&state.broker, MAX_LIST + 1)
        .await
        .map_err(dependency_error)?;
    let unexamined = letters.len() > MAX_LIST;
    letters.truncate(MAX_LIST);
    let matching = letters
        .into_iter()
        .filter(|letter| selection.matches(letter))
        .take(limit)
        .collect();
    Ok((matching, unexamined))
}

/// What an action did, and the audit row that records it (`None` if that
/// row could not be written; the action happened all the same).
#[derive(Debug)]
pub(crate) struct Audited<T> {
    pub value: T,
    pub audit_id: Option<i64>,
}

/// Replays the dead letters `filter` selects, and audits it (`target` says
/// what was asked for).
pub(crate) async fn replay_dead_letters(
    state: &AppState,
    operator: &Operator,
    filter: &Filter,
    target: &str,
) -> Result<Audited<ReplayReport>, ApiError> {
    let actor = format!("api-key:{}", operator.key_id);
    let outcome = dead_letters::replay(&state.pool, &state.broker, filter, &actor).await;
    let result = match &outcome {
        Ok(report) => format!(
            "replayed {}, dropped {} (payment had moved on), kept {}",
            report.replayed.len(),
            report.dropped.len(),
            report.kept
        ),
        Err(err) => format!("failed: {err:#}"),
    };
    let audit_id = audit(
        state,
        Some(operator.key_id),
        "dead_letters.replay",
        target,
        &result,
    )
    .await;
    let report = outcome.map_err(dependency_error)?;
    tracing::info!(
        replayed = report.replayed.len(),
        dropped = report.dropped.len(),
        actor = %actor,
        "dead letters replayed by an operator"
    );
    Ok(Audited {
        value: report,
        audit_id,
    })
}

/// What a purge did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PurgeReport {
    /// Dead letters discarded (their payments stay failed).
    pub purged: usize,
}

/// Discards every dead letter, and audits it.
pub(crate) async fn purge_dead_letters(
    state: &AppState,
    operator: &Operator,
) -> Result<Audited<PurgeReport>, ApiError> {
    let actor = format!("api-key:{}", operator.key_id);
    let outcome = dead_letters::purge(&state.pool, &state.broker, &actor).await;
    let result = match &outcome {
        Ok(purged) => format!("purged {purged}"),
        Err(err) => format!("failed: {err:#}"),
    };
    let audit_id = audit(
        state,
        Some(operator.key_id),
        "dead_letters.purge",
        "every dead letter",
        &result,
    )
    .await;
    let purged = outcome.map_err(dependency_error)?;
    tracing::info!(purged, actor = %actor, "dead letters purged by an operator");
    Ok(Audited {
        value: PurgeReport { purged },
        audit_id,
    })
}

/// Writes an audit row; its id. The action it records has happened
/// already, so a failure to write it is logged (loudly) rather than reported
/// as the action's failure.
pub(crate) async fn audit(
    state: &AppState,
    key_id: Option<Uuid>,
    action: &str,
    target: &str,
    result: &str,
) -> Option<i64> {
    match db::audit::record(&state.pool, key_id, action, target, result).await {
        Ok(id) => Some(id),
        Err(err) => {
            tracing::error!(error = %err, action, target, result, "could not write the audit row");
            None
        }
    }
}

/// One audit row (the console's notice after an action).
pub(crate) async fn audit_row(state: &AppState, id: i64) -> Result<Option<AuditRow>, ApiError> {
    Ok(db::audit::find(&state.pool, id).await?)
}

/// Body of `POST /v1/admin/dead-letters/purge`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// Must be `true`: a purge cannot be undone.
    confirm: bool,
}

impl JsonRequest for PurgeRequest {}

#[utoipa::path(
    post,
    path = "/v1/admin/dead-letters/purge",
    tag = "operators",
    operation_id = "purge_dead_letters",
    summary = "Purge the dead letters",
    description = "Discards every dead letter; their payments stay failed (each payment's \
history says so). Send `\"confirm\": true`.",
    request_body(content = PurgeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "How many were discarded.", body = PurgeReport)
    ),
    security(("bearer" = ["admin"]))
)]
async fn purge(
    State(state): State<AppState>,
    operator: Operator,
    JsonBody { value: request, .. }: JsonBody<PurgeRequest>,
) -> Result<Json<PurgeReport>, ApiError> {
    if !request.confirm {
        return Err(ApiError::invalid(
            "confirm",
            "confirmation_required",
            "A purge cannot be undone: send `\"confirm\": true`.",
        ));
    }
    Ok(Json(purge_dead_letters(&state, &operator).await?.value))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Rows to show, 1 to 1000 (default 100), newest first.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "operators",
    operation_id = "list_audit",
    summary = "List operator actions",
    description = "Every operator action (dead-letter replays and purges, console sign-ins \
and sign-outs), newest first.",
    params(AuditQuery),
    responses(
        (status = 200, description = "The audit rows.", body = List<AuditRow>)
    ),
    security(("bearer" = ["admin"]))
)]
async fn audit_log(
    State(state): State<AppState>,
    _operator: Operator,
    Query(query): Query<AuditQuery>,
) -> Result<Json<List<AuditRow>>, ApiError> {
    let limit = PageSize::OPERATOR.limit(query.limit)?;
    let rows = audit_rows(&state, limit.fetch_len()).await?;
    Ok(Json(List::page("/v1/admin/audit", rows, limit)))
}

pub(crate) async fn audit_rows(state: &AppState, limit: usize) -> Result<Vec<AuditRow>, ApiError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(db::audit::list(&state.pool, limit).await?)
}

/// A queue and the messages ready in it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    pub queue: String,
    /// `None` when the queue could not be read (not declared yet, or the
    /// broker is unreachable).
    pub depth: Option<u32>,
}

/// What the system is doing: payments by status, the last hour minute by
/// minute, every queue's depth, the workers.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Overview {
    pub statuses: Vec<StatusCount>,
    pub last_hour: Vec<Minute>,
    pub queues: Vec<QueueDepth>,
    pub workers: Vec<WorkerRow>,
    /// A worker whose heartbeat is older than this (`WORKER_DEAD_AFTER`) is
    /// dead.
    pub worker_dead_after_secs: f64,
}

pub(crate) async fn overview(state: &AppState) -> Result<Overview, ApiError> {
    Ok(Overview {
        statuses: db::console_views::status_counts(&state.pool).await?,
        last_hour: db::console_views::last_hour(&state.pool).await?,
        queues: queue_depths(state).await,
        workers: db::console_views::workers(&state.pool).await?,
        worker_dead_after_secs: state.settings.console.worker_dead_after.as_secs_f64(),
    })
}

/// Every queue: payments' process, retry tiers and dead; the webhooks'
/// likewise. Passive declares, which create nothing.
async fn queue_depths(state: &AppState) -> Vec<QueueDepth> {
    let console = &state.settings.console;
    let payments = state.broker.topology().clone();
    let webhooks = state.webhook_broker.topology().clone();
    let mut names = vec![payments.process_queue()];
    names.extend(
        console
            .retry_delays
            .iter()
            .map(|d| payments.retry_queue(*d)),
    );
    names.push(payments.dead_queue());
    names.push(webhooks.process_queue());
    names.extend(
        console
            .webhook_retry_delays
            .iter()
            .map(|d| webhooks.retry_queue(*d)),
    );
    names.push(webhooks.dead_queue());
    let mut depths = Vec::with_capacity(names.len());
    let mut channel = state.broker.open_channel().await.ok();
    for queue in names {
        let mut depth = None;
        if let Some(open) = &channel {
            match open
                .queue_declare(
                    &queue,
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..lapin::options::QueueDeclareOptions::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
            {
                Ok(declared) => depth = Some(declared.message_count()),
                // A failed passive declare closes the channel: a new one for
                // the next queue.
                Err(_) => channel = state.broker.open_channel().await.ok(),
            }
        }
        depths.push(QueueDepth { queue, depth });
    }
    if let Some(channel) = channel {
        let _ = channel.close(200, "depths read").await;
    }
    depths
}

#[utoipa::path(
    get,
    path = "/v1/admin/overview",
    tag = "operators",
    operation_id = "get_overview",
    summary = "Payments by status, the last hour, queue depths and workers",
    responses(
        (status = 200, description = "The overview.", body = Overview)
    ),
    security(("bearer" = ["admin"]))
)]
async fn overview_handler(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Overview>, ApiError> {
    Ok(Json(overview(&state).await?))
}

/// What needs an operator: stuck payments and failing webhook endpoints.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Attention {
    pub payments: Vec<StuckPayment>,
    pub endpoints: Vec<FailingEndpoint>,
    /// A payment is overdue when its next step is this late (`RESCUE_AFTER`).
    pub overdue_after_secs: f64,
}

pub(crate) async fn attention(state: &AppState) -> Result<Attention, ApiError> {
    let overdue = state.settings.console.rescue_after.as_secs_f64();
    Ok(Attention {
        payments: db::console_views::stuck_payments(&state.pool, overdue, 200).await?,
        endpoints: db::console_views::failing_endpoints(&state.pool, 100).await?,
        overdue_after_secs: overdue,
    })
}

#[utoipa::path(
    get,
    path = "/v1/admin/attention",
    tag = "operators",
    operation_id = "get_attention",
    summary = "What needs an operator",
    description = "Payments whose outcome is unknown, held for an operator or overdue past \
`RESCUE_AFTER`, and failing webhook endpoints.",
    responses(
        (status = 200, description = "What needs attention.", body = Attention)
    ),
    security(("bearer" = ["admin"]))
)]
async fn attention_handler(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Attention>, ApiError> {
    Ok(Json(attention(&state).await?))
}

/// A failure of the broker or the database during an operator action: 503
/// when a dependency is unreachable, 500 otherwise.
pub(crate) fn dependency_error(err: anyhow::Error) -> ApiError {
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
