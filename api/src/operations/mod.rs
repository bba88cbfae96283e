//! The rest of a payment's life (DESIGN.md section 9): capture an
//! authorization, cancel (or void), refund, and read refunds.
//!
//! Each `POST` that needs the processor creates an operation (capture, void,
//! refund) with its outbox row in one guarded statement
//! (`common::db::operations::create`), answers `202` at once, and honours
//! `Prefer: wait=N` and `Idempotency-Key` exactly like `POST /v1/payments`.
//! Cancelling a payment nobody has claimed yet needs no processor: it is one
//! guarded transition, and its queued job then finds nothing to do.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::db::operations::{self, Kind, NewOperation, OperationRow, OperationStatus};
use common::db::payments::{self, Audit, PaymentRow};
use common::domain::{PaymentId, PaymentStatus, RefundId, Scope, MAX_AMOUNT};
use common::queue::Job;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorEnvelope, ErrorType, ResultExt as _};
use crate::http::idempotency::{self, Begun, Claim};
use crate::http::request::{JsonRequest, Sent, Submission, Submitted};
use crate::http::wait::{outcome_unknown, wait_until};
use crate::openapi::PaymentOperationParams;
use crate::payments::no_such_payment;
use crate::payments::validate;
use crate::payments::view::{view, Expand};
use crate::payments::wire::{Payment, Refund};
use crate::state::AppState;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(capture))
        .routes(routes!(cancel))
        .routes(routes!(refund))
        .routes(routes!(list_refunds))
        .routes(routes!(retrieve_refund))
}

/// `POST /v1/payments/:id/capture`; every field optional, no body at all
/// is `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Minor units to capture, at most `amount_capturable`; default all of
    /// it. The rest is released.
    #[schema(minimum = 1, maximum = 99_999_999)]
    amount: Option<i64>,
    /// Printable ASCII without `< > \ ' " *`, at least one letter. Sent to
    /// the processor with the capture; once captured it is the payment's
    /// `statement_descriptor`.
    #[schema(
        min_length = 1,
        max_length = 22,
        pattern = "^[ !#-&()+-;=?-\\[\\]-~]*[A-Za-z][ !#-&()+-;=?-\\[\\]-~]*$"
    )]
    statement_descriptor: Option<String>,
    /// Up to 50 keys of 1 to 40 characters, string values of at most 500.
    /// Once captured, merged into the payment's `metadata` (a key sent here
    /// replaces the payment's value); the merge may hold at most 50 keys.
    metadata: Option<BTreeMap<String, String>>,
}

/// Why a payment is cancelled: the request's `reason`, read as this type
/// (any other value is a `400` naming `reason` and listing these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CancellationReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
    Abandoned,
}

/// `POST /v1/payments/:id/cancel`; no body at all is `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Default `requested_by_customer`.
    reason: Option<CancellationReason>,
}

/// Why a payment is refunded: the request's `reason`, read as this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RefundReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
    Defective,
    Other,
}

/// `POST /v1/payments/:id/refund`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Minor units to refund; default all that is still refundable.
    #[schema(minimum = 1, maximum = 99_999_999)]
    amount: Option<i64>,
    /// Required.
    #[schema(value_type = RefundReason)]
    reason: Option<RefundReason>,
    #[schema(min_length = 1, max_length = 500)]
    notes: Option<String>,
    /// Up to 50 keys of 1 to 40 characters, string values of at most 500.
    metadata: Option<BTreeMap<String, String>>,
}

/// A page of a payment's refunds, newest first.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct RefundList {
    /// Always `list`.
    #[schema(example = "list")]
    object: &'static str,
    /// Always `/v1/refunds`.
    #[schema(example = "/v1/refunds")]
    url: &'static str,
    has_more: bool,
    data: Vec<Refund>,
}

const MAX_NOTES: usize = 500;

impl JsonRequest for CaptureRequest {
    fn when_absent() -> Option<Self> {
        Some(Self::default())
    }
}

impl Submission for CaptureRequest {
    const SCOPE: Scope = Scope::PaymentsWrite;
}

impl JsonRequest for CancelRequest {
    fn when_absent() -> Option<Self> {
        Some(Self::default())
    }
}

impl Submission for CancelRequest {
    const SCOPE: Scope = Scope::PaymentsWrite;
}

impl JsonRequest for RefundRequest {}

impl Submission for RefundRequest {
    const SCOPE: Scope = Scope::PaymentsWrite;
}

fn check_amount(amount: Option<i64>) -> Result<(), ApiError> {
    match amount {
        Some(a) if !(1..=MAX_AMOUNT).contains(&a) => Err(ApiError::invalid(
            "amount",
            "invalid_amount",
            format!("`amount` must be a positive integer in minor units, at most {MAX_AMOUNT}."),
        )),
        _ => Ok(()),
    }
}

fn parse_payment_id(id: &str) -> Result<PaymentId, ApiError> {
    id.parse().map_err(|_| no_such_payment())
}

async fn find_payment(
    state: &AppState,
    caller: &Caller,
    id: PaymentId,
) -> Result<PaymentRow, ApiError> {
    payments::find_for_merchant(&state.pool, caller.merchant_id, id)
        .await?
        .ok_or_else(no_such_payment)
}

/// An operation the API asks for on payment `id`, with every optional field
/// empty: the handlers fill in what their request has.
fn new_operation(id: PaymentId, kind: Kind, sent: &Sent) -> NewOperation {
    NewOperation {
        id: Uuid::now_v7(),
        payment_id: id.0,
        merchant_id: sent.caller.merchant_id,
        kind,
        amount: None,
        requested_by: "api".into(),
        reason: None,
        notes: None,
        statement_descriptor: None,
        metadata: json!({}),
        origin: sent.origin.clone(),
    }
}

/// The idempotency route of an operation on payment `id`.
fn route(id: PaymentId, action: &str) -> String {
    format!("POST /v1/payments/{id}/{action}")
}

/// Claims the request's idempotency key for `route`: `Err` with the stored
/// answer for a replay.
async fn claim(
    state: &AppState,
    sent: &Sent,
    route: &str,
) -> Result<Result<Option<Claim>, Response>, ApiError> {
    Ok(match sent.begin(state, route).await? {
        Begun::Replay(response) => Err(response),
        Begun::Unkeyed => Ok(None),
        Begun::Claimed(claim) => Ok(Some(claim)),
    })
}

/// Creates the operation under the request's idempotency key (claimed by
/// the handler before it decided anything) and answers with
/// `render(operation, payment)`.
async fn create_operation(
    state: &AppState,
    sent: &Sent,
    claim: Option<Claim>,
    new: NewOperation,
) -> Result<Response, ApiError> {
    let created = async {
        let mut tx = state.pool.begin().await?;
        let created = operations::create(&mut tx, &new, state.settings.relay_after)
            .await
            .on_constraint("operations_one_open_capture_or_void", operation_in_progress)?;
        let Some(created) = created else {
            // Why, read in this transaction: the payment row is locked by
            // it, and a second connection would wait behind the very
            // requests that queue on that lock.
            let row = payments::find_for_merchant(
                &mut *tx,
                sent.caller.merchant_id,
                PaymentId(new.payment_id),
            )
            .await?
            .ok_or_else(no_such_payment)?;
            return Err(not_allowed(&row, new.kind));
        };
        let row = payments::find(&mut *tx, PaymentId(new.payment_id))
            .await?
            .ok_or_else(no_such_payment)?;
        let body = render(&mut *tx, state, &created.operation, &row).await?;
        if let Some(claim) = &claim {
            claim
                .complete(&mut *tx, StatusCode::ACCEPTED, &body, new.payment_id)
                .await?;
        }
        tx.commit().await.map_err(outcome_unknown)?;
        Ok::<_, ApiError>((created, body))
    }
    .await;
    let (created, body) = idempotency::abandon_on_error(state, claim.as_ref(), created).await?;
    let job = Job::operation(
        created.operation.id,
        new.payment_id,
        sent.caller.merchant_id,
    );
    state
        .outbox
        .publish_now(&state.broker, &job, created.outbox_id)
        .await;

    let Some(wait) = sent.wait else {
        return Ok(answer(StatusCode::ACCEPTED, body, None));
    };
    // Committed: from here every answer identifies what was committed.
    let op_id = created.operation.id;
    let waited = wait_until(
        state,
        op_id,
        wait,
        OperationRow::is_terminal,
        || async move {
            operations::find(&state.pool, op_id)
                .await?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("operation vanished")))
        },
    )
    .await;
    let Ok(op) = waited else {
        return Ok(answer(StatusCode::ACCEPTED, body, Some(wait)));
    };
    let Ok(Some(row)) = payments::find(&state.pool, PaymentId(new.payment_id)).await else {
        return Ok(answer(StatusCode::ACCEPTED, body, Some(wait)));
    };
    // Committed: a failure to read now answers with what was committed,
    // never with an error that says nothing was written.
    match render(&state.pool, state, &op, &row).await {
        Ok(latest) if op.status == OperationStatus::Failed && op.kind() != Kind::Refund => {
            Ok(refused(&op, latest, wait))
        }
        Ok(latest) if op.is_terminal() => Ok(answer(StatusCode::OK, latest, Some(wait))),
        Ok(latest) => Ok(answer(StatusCode::ACCEPTED, latest, Some(wait))),
        Err(_) => Ok(answer(StatusCode::ACCEPTED, body, Some(wait))),
    }
}

/// A refund answers with the refund; a capture or void with the payment.
async fn render<'e>(
    db: impl sqlx::PgExecutor<'e>,
    state: &AppState,
    op: &OperationRow,
    row: &PaymentRow,
) -> Result<Value, ApiError> {
    let value = match op.kind() {
        Kind::Refund => serde_json::to_value(Refund::from_row(op)),
        Kind::Capture | Kind::Void => {
            serde_json::to_value(view(db, state, row, &Expand::default()).await?)
        }
    };
    Ok(value?)
}

/// A capture or void that ended `failed` while the client waited: `402`
/// with the error envelope (`capture_failed` or `void_failed`), the
/// processor's `failure_code` and message, and the payment as it is now.
/// The operation was committed, and the answer says so: it names the
/// payment, whose `last_operation_error` holds the same failure. (A refund
/// is its own object, whose `status` says `failed`: it answers `200`.)
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {
    "type": "processor_error",
    "code": "capture_failed",
    "message": "only an uncaptured authorization can be captured; this charge is voided",
    "failure_code": "charge_not_capturable",
    "param": null,
    "request_id": "req_4f1c2a9e0b7d4c6a8e3f5b1d2c7a9e0f",
    "payment": {"id": "pay_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a", "status": "cancelled"}
}}))]
pub(crate) struct OperationFailedEnvelope {
    error: OperationFailed,
}

#[derive(Debug, Serialize, ToSchema)]
struct OperationFailed {
    /// Always `processor_error`.
    #[serde(rename = "type")]
    kind: ErrorType,
    /// `capture_failed` or `void_failed`.
    code: &'static str,
    /// The processor's message.
    message: String,
    /// The processor's code, as in the payment's `last_operation_error`.
    failure_code: String,
    /// Always `null`: the request was valid; the processor refused it.
    param: Option<String>,
    request_id: Option<String>,
    /// The payment after the failure.
    #[schema(value_type = Payment)]
    payment: Value,
}

fn refused(op: &OperationRow, payment: Value, wait: Duration) -> Response {
    let body = OperationFailedEnvelope {
        error: OperationFailed {
            kind: ErrorType::ProcessorError,
            code: match op.kind() {
                Kind::Void => "void_failed",
                _ => "capture_failed",
            },
            message: op.failure_message.clone().unwrap_or_default(),
            failure_code: op.failure_code.clone().unwrap_or_default(),
            param: None,
            request_id: crate::http::request_id::current_request_id(),
            payment,
        },
    };
    let mut response = (StatusCode::PAYMENT_REQUIRED, Json(body)).into_response();
    crate::http::request::preference_applied(&mut response, Some(wait));
    response
}

fn answer(status: StatusCode, body: Value, wait: Option<Duration>) -> Response {
    let mut response = (status, Json(body)).into_response();
    crate::http::request::preference_applied(&mut response, wait);
    response
}

fn operation_in_progress() -> ApiError {
    ApiError::bad_request(
        StatusCode::CONFLICT,
        "operation_in_progress",
        "A capture or cancellation of this payment is under way. Retry once it is done.",
    )
}

/// Why the payment `row` (read in the transaction whose guarded statement
/// refused the operation) does not allow a `kind`.
fn not_allowed(row: &PaymentRow, kind: Kind) -> ApiError {
    let succeeded = row.status == PaymentStatus::Succeeded;
    match kind {
        Kind::Capture if succeeded && !row.captured && row.amount_capturable > 0 => {
            ApiError::invalid(
                "amount",
                "amount_exceeds_capturable",
                format!(
                    "`amount` may be at most the amount capturable, {}.",
                    row.amount_capturable
                ),
            )
        }
        Kind::Capture => ApiError::bad_request(
            StatusCode::BAD_REQUEST,
            "payment_not_capturable",
            "Only an authorized, uncaptured payment can be captured.",
        ),
        Kind::Refund if succeeded && row.captured => ApiError::invalid(
            "amount",
            "amount_exceeds_refundable",
            format!(
                "`amount` may be at most what is still refundable, {}.",
                row.amount_captured - row.amount_refunded
            ),
        ),
        Kind::Refund => ApiError::bad_request(
            StatusCode::BAD_REQUEST,
            "payment_not_refundable",
            "Only a captured payment can be refunded.",
        ),
        Kind::Void => not_cancellable(),
    }
}

fn not_cancellable() -> ApiError {
    ApiError::bad_request(
        StatusCode::BAD_REQUEST,
        "payment_not_cancellable",
        "Captured, failed and cancelled payments cannot be cancelled; refund a captured payment instead.",
    )
}

/// A capture's `metadata` is merged into the payment's when it is done:
/// the merge stays within the limit of keys, or the capture is `400`.
fn check_merged_metadata(row: &PaymentRow, capture: &Value) -> Result<(), ApiError> {
    let (Value::Object(payment), Value::Object(capture)) = (&row.metadata.0, capture) else {
        return Ok(());
    };
    let added = capture.keys().filter(|k| !payment.contains_key(*k)).count();
    if payment.len() + added > validate::MAX_METADATA_KEYS {
        return Err(ApiError::invalid(
            "metadata",
            "too_many_metadata_keys",
            format!(
                "The payment's `metadata` merged with the capture's would have more than {} keys.",
                validate::MAX_METADATA_KEYS
            ),
        ));
    }
    Ok(())
}

fn metadata(value: Option<&BTreeMap<String, String>>) -> Result<Value, ApiError> {
    value.map_or(Ok(json!({})), validate::check_metadata)
}

/// Captures an authorized, uncaptured payment.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/capture",
    tag = "payments",
    operation_id = "capture_payment",
    summary = "Capture an authorization",
    description = "Captures all of an authorized, uncaptured payment's `amount_capturable`, or \
`amount` of it (the rest is released). Answers `202` with the payment at once; with \
`Prefer: wait=N`, `200` once the capture is done, or `402` (`capture_failed`) if the processor \
refused it. A processor that no longer holds the authorization (`charge_not_capturable`) leaves \
the payment `cancelled` with nothing capturable; the failure is the payment's \
`last_operation_error` and a `payment.capture_failed` event.",
    params(PaymentOperationParams),
    request_body(content = Option<CaptureRequest>, content_type = "application/json", description = "Optional: no body is `{}`."),
    responses(
        (status = 202, description = "Capture under way.", body = Payment),
        (status = 200, description = "With `Prefer: wait=N`: the capture is done.", body = Payment),
        (status = 402, description = "With `Prefer: wait=N`: the processor refused the capture (`capture_failed`); the payment as it is now is in the error.", body = OperationFailedEnvelope),
        (status = 404, description = "No such payment (of this merchant).", body = ErrorEnvelope),
        (status = 409, description = "Another capture or cancellation is under way, or the `Idempotency-Key` is in flight.", body = ErrorEnvelope),
        (status = 422, description = "This `Idempotency-Key` was used with a different request.", body = ErrorEnvelope)
    ),
    security(("bearer" = ["payments:write"]))
)]
async fn capture(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Submitted { body, sent }: Submitted<CaptureRequest>,
) -> Result<Response, ApiError> {
    let id = parse_payment_id(&id)?;
    check_amount(body.amount)?;
    validate::check_descriptor(&body.statement_descriptor)?;
    let metadata = metadata(body.metadata.as_ref())?;
    let claim = match claim(&state, &sent, &route(id, "capture")).await? {
        Ok(claim) => claim,
        Err(replay) => return Ok(replay),
    };
    let found = find_payment(&state, &sent.caller, id)
        .await
        .and_then(|row| check_merged_metadata(&row, &metadata));
    idempotency::abandon_on_error(&state, claim.as_ref(), found).await?;
    let new = NewOperation {
        amount: body.amount,
        statement_descriptor: body.statement_descriptor,
        metadata,
        ..new_operation(id, Kind::Capture, &sent)
    };
    create_operation(&state, &sent, claim, new).await
}

/// Cancels a payment, voiding its authorization if it has one.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/cancel",
    tag = "payments",
    operation_id = "cancel_payment",
    summary = "Cancel a payment",
    description = "A `pending` payment not yet processed is cancelled at once and never charged \
(`200`); an authorized, uncaptured one is voided at the processor (`202`, or `200` with \
`Prefer: wait=N` once done; `402` `void_failed` if the processor refused the void). A payment \
being processed is `409`; a captured, failed or \
cancelled one `400` (`payment_not_cancellable`).",
    params(PaymentOperationParams),
    request_body(content = Option<CancelRequest>, content_type = "application/json", description = "Optional: no body is `{}`."),
    responses(
        (status = 200, description = "Cancelled.", body = Payment),
        (status = 202, description = "Void under way.", body = Payment),
        (status = 402, description = "With `Prefer: wait=N`: the processor refused the void (`void_failed`); the payment as it is now is in the error.", body = OperationFailedEnvelope),
        (status = 404, description = "No such payment (of this merchant).", body = ErrorEnvelope),
        (status = 409, description = "The payment is being processed, or the `Idempotency-Key` is in flight.", body = ErrorEnvelope),
        (status = 422, description = "This `Idempotency-Key` was used with a different request.", body = ErrorEnvelope)
    ),
    security(("bearer" = ["payments:write"]))
)]
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Submitted { body, sent }: Submitted<CancelRequest>,
) -> Result<Response, ApiError> {
    let id = parse_payment_id(&id)?;
    let reason: &'static str = body
        .reason
        .unwrap_or(CancellationReason::RequestedByCustomer)
        .into();
    // The key first: a retried cancel gets its first answer back, whatever
    // the payment's status is now (it is `cancelled` after the first).
    let claim = match claim(&state, &sent, &route(id, "cancel")).await? {
        Ok(claim) => claim,
        Err(replay) => return Ok(replay),
    };
    let found = find_payment(&state, &sent.caller, id).await;
    let row = idempotency::abandon_on_error(&state, claim.as_ref(), found).await?;
    match row.status {
        // Nobody has claimed it: cancelled at once, never charged. Its
        // queued job finds a cancelled payment and does nothing.
        PaymentStatus::Pending if row.outcome_unknown_since.is_none() => {
            cancel_unprocessed(&state, &sent, claim, &row, reason).await
        }
        // Being processed, or its outcome is being confirmed: no answer
        // about the card yet.
        PaymentStatus::Pending | PaymentStatus::Processing => {
            idempotency::abandon_on_error(&state, claim.as_ref(), Err(payment_processing())).await
        }
        PaymentStatus::Succeeded if !row.captured => {
            let new = NewOperation {
                reason: Some(reason.to_owned()),
                ..new_operation(id, Kind::Void, &sent)
            };
            create_operation(&state, &sent, claim, new).await
        }
        _ => idempotency::abandon_on_error(&state, claim.as_ref(), Err(not_cancellable())).await,
    }
}

fn payment_processing() -> ApiError {
    ApiError::bad_request(
        StatusCode::CONFLICT,
        "payment_processing",
        "The payment is being processed. Retry once it is no longer pending or processing.",
    )
}

async fn cancel_unprocessed(
    state: &AppState,
    sent: &Sent,
    claim: Option<Claim>,
    row: &PaymentRow,
    reason: &str,
) -> Result<Response, ApiError> {
    let done = async {
        let mut tx = state.pool.begin().await?;
        let audit = Audit {
            actor: "api",
            reason: "cancelled before processing",
        };
        let Some(cancelled) =
            payments::cancel_unprocessed(&mut *tx, row.payment_id(), reason, &sent.origin, audit)
                .await?
        else {
            // A worker claimed it meanwhile.
            return Err(payment_processing());
        };
        let body =
            serde_json::to_value(view(&mut *tx, state, &cancelled, &Expand::default()).await?)?;
        if let Some(claim) = &claim {
            claim
                .complete(&mut *tx, StatusCode::OK, &body, row.id)
                .await?;
        }
        tx.commit().await.map_err(outcome_unknown)?;
        Ok::<_, ApiError>(body)
    }
    .await;
    let body = idempotency::abandon_on_error(state, claim.as_ref(), done).await?;
    Ok(answer(StatusCode::OK, body, None))
}

/// Refunds all or part of a captured payment.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/refund",
    tag = "refunds",
    operation_id = "refund_payment",
    summary = "Refund a payment",
    description = "Refunds `amount` (default: all that is still refundable) of a captured \
payment. Answers `202` with the refund (`pending`); with `Prefer: wait=N`, `200` once it \
`succeeded` or `failed`. Asking for more than is refundable is `400` \
(`amount_exceeds_refundable`), also under concurrent requests.",
    params(PaymentOperationParams),
    request_body(content = RefundRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Refund under way.", body = Refund, links(
            ("get" = (operation_id = "get_refund", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 200, description = "With `Prefer: wait=N`: the refund is done.", body = Refund, links(
            ("get" = (operation_id = "get_refund", parameters(("id" = "$response.body#/id"))))
        )),
        (status = 404, description = "No such payment (of this merchant).", body = ErrorEnvelope),
        (status = 409, description = "The `Idempotency-Key` is in flight.", body = ErrorEnvelope),
        (status = 422, description = "This `Idempotency-Key` was used with a different request.", body = ErrorEnvelope)
    ),
    security(("bearer" = ["payments:write"]))
)]
async fn refund(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Submitted { body, sent }: Submitted<RefundRequest>,
) -> Result<Response, ApiError> {
    let id = parse_payment_id(&id)?;
    check_amount(body.amount)?;
    let Some(reason) = body.reason else {
        return Err(ApiError::invalid(
            "reason",
            "parameter_missing",
            "`reason` is required: one of duplicate, fraudulent, requested_by_customer, \
             defective, other.",
        ));
    };
    let reason: &'static str = reason.into();
    validate::check_len("notes", &body.notes, 1, MAX_NOTES)?;
    let metadata = metadata(body.metadata.as_ref())?;
    let claim = match claim(&state, &sent, &route(id, "refund")).await? {
        Ok(claim) => claim,
        Err(replay) => return Ok(replay),
    };
    let found = find_payment(&state, &sent.caller, id).await;
    idempotency::abandon_on_error(&state, claim.as_ref(), found).await?;
    let new = NewOperation {
        amount: body.amount,
        reason: Some(reason.to_owned()),
        notes: body.notes,
        metadata,
        ..new_operation(id, Kind::Refund, &sent)
    };
    create_operation(&state, &sent, claim, new).await
}

fn no_such_refund() -> ApiError {
    ApiError::not_found("No such refund.")
}

/// One refund.
#[utoipa::path(
    get,
    path = "/v1/refunds/{id}",
    tag = "refunds",
    operation_id = "get_refund",
    summary = "Retrieve a refund",
    params(
        ("id" = String, Path, description = "The refund's id, `ref_…`.", example = "ref_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a")
    ),
    responses(
        (status = 200, description = "The refund.", body = Refund),
        (status = 404, description = "No such refund (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["payments:read"]))
)]
async fn retrieve_refund(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Refund>, ApiError> {
    caller.require(Scope::PaymentsRead)?;
    let id: RefundId = id.parse().map_err(|_| no_such_refund())?;
    let row = operations::find_for_merchant(&state.pool, caller.merchant_id, id.0, Kind::Refund)
        .await?
        .ok_or_else(no_such_refund)?;
    Ok(Json(Refund::from_row(&row)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RefundListQuery {
    /// The payment whose refunds to list, `pay_…`.
    #[param(example = "pay_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a")]
    payment_id: String,
    /// 1 to 100, default 10.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A refund id: the page starts just after it.
    starting_after: Option<String>,
}

/// `GET /v1/refunds?payment_id=…`: the payment's refunds, newest first,
/// `limit` (1–100, default 10) and `starting_after` (a refund id).
#[utoipa::path(
    get,
    path = "/v1/refunds",
    tag = "refunds",
    operation_id = "list_refunds",
    summary = "List a payment's refunds",
    params(RefundListQuery),
    responses(
        (status = 200, description = "A page of refunds, newest first.", body = RefundList),
        (status = 404, description = "No such payment (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["payments:read"]))
)]
async fn list_refunds(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<RefundList>, ApiError> {
    caller.require(Scope::PaymentsRead)?;
    let query: RefundListQuery = crate::http::extract::parse_query(query.as_deref().unwrap_or(""))?;
    let payment_id: PaymentId = query.payment_id.parse().map_err(|_| {
        ApiError::invalid(
            "payment_id",
            "invalid_id",
            "`payment_id` is not a payment id.",
        )
    })?;
    let limit = crate::http::extract::page_limit(query.limit, 10, 100)?;
    let starting_after = query
        .starting_after
        .as_deref()
        .map(|id| {
            id.parse::<RefundId>().map(|r| r.0).map_err(|_| {
                ApiError::invalid(
                    "starting_after",
                    "invalid_id",
                    "`starting_after` is not a refund id.",
                )
            })
        })
        .transpose()?;
    // Another merchant's payment is unknown here too.
    find_payment(&state, &caller, payment_id).await?;
    let mut rows = operations::list_for_payment(
        &state.pool,
        payment_id.0,
        Kind::Refund,
        starting_after,
        limit + 1,
    )
    .await?;
    let has_more = crate::http::page::take_page(&mut rows, limit);
    let data: Vec<Refund> = rows.iter().map(Refund::from_row).collect();
    Ok(Json(RefundList {
        object: "list",
        url: "/v1/refunds",
        has_more,
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enum_values<T: utoipa::PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).expect("serializes");
        schema["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .map(|v| v.as_str().expect("a string").to_owned())
            .collect()
    }

    /// Each documented value reads as the enum and is stored as its
    /// spelling; nothing else reads.
    fn reads_exactly_the_documented<T>()
    where
        T: utoipa::PartialSchema + serde::de::DeserializeOwned + Into<&'static str>,
    {
        for value in enum_values::<T>() {
            let read: T = serde_json::from_value(json!(value)).expect("a documented value reads");
            assert_eq!(read.into(), value);
        }
        assert!(serde_json::from_value::<T>(json!("bored")).is_err());
    }

    #[test]
    fn the_documented_reasons_are_the_accepted_ones() {
        reads_exactly_the_documented::<CancellationReason>();
        reads_exactly_the_documented::<RefundReason>();
    }
}
