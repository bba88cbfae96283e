//! The rest of a payment's life (DESIGN.md section 9): capture an
//! authorization, cancel (or void), refund, and read refunds.
//!
//! Each `POST` that needs the processor creates an operation (capture, void,
//! refund) with its outbox row in one guarded statement
//! (`common::db::operations::create`), answers `202` at once, and honours
//! `Prefer: wait=N` and `Idempotency-Key` exactly like `POST /v1/payments`.
//! Cancelling a payment nobody has claimed yet needs no processor: it is one
//! guarded transition, and its queued job then finds nothing to do.

mod cancel;
mod capture;
mod refund;

use cancel::not_cancellable;
pub use cancel::{CancelRequest, CancellationReason};
pub use capture::CaptureRequest;
pub use refund::{RefundReason, RefundRequest};

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::db::operations::{self, NewOperation, OperationRow};
use common::db::payments::{self, PaymentRow};
use common::domain::{Kind, OperationId, OperationStatus};
use common::domain::{PaymentId, PaymentStatus, MAX_AMOUNT};
use common::queue::Job;
use serde::Serialize;
use serde_json::{json, Value};

use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorType, ResultExt as _};
use crate::http::idempotency::{self, Begun, Claim};
use crate::http::params::{IdempotencyKeyHeader, PreferHeader};
use crate::http::request::Sent;
use crate::http::wait::{outcome_unknown, wait_until};
use crate::payments::no_such_payment;
use crate::payments::validate;
use crate::payments::view::{view, Expand};
use crate::payments::wire::{Payment, Refund};
use crate::state::AppState;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .merge(capture::routes())
        .merge(cancel::routes())
        .merge(refund::routes())
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
        id: OperationId::new(),
        payment_id: id,
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

/// What every capture, cancel and refund does first: claims the request's
/// idempotency key for `POST /v1/payments/{id}/{action}` (before anything
/// is decided, so a retry gets the first answer back whatever the payment
/// is now), then reads the payment, releasing the key if it cannot be read.
/// `Err` inside: the stored answer of a replay, to send as it is.
async fn claim_and_find(
    state: &AppState,
    sent: &Sent,
    id: PaymentId,
    action: &str,
) -> Result<Result<(Option<Claim>, PaymentRow), Response>, ApiError> {
    let claim = match sent.begin(state, &route(id, action)).await? {
        Begun::Replay(response) => return Ok(Err(response)),
        Begun::Unkeyed => None,
        Begun::Claimed(claim) => Some(claim),
    };
    let found = find_payment(state, &sent.caller, id).await;
    let row = idempotency::abandon_on_error(state, claim.as_ref(), found).await?;
    Ok(Ok((claim, row)))
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
            let row =
                payments::find_for_merchant(&mut *tx, sent.caller.merchant_id, new.payment_id)
                    .await?
                    .ok_or_else(no_such_payment)?;
            return Err(not_allowed(&row, new.kind));
        };
        let row = payments::find(&mut *tx, new.payment_id)
            .await?
            .ok_or_else(no_such_payment)?;
        let body = render(&mut *tx, state, &created.operation, &row).await?;
        if let Some(claim) = &claim {
            claim
                .complete(&mut *tx, StatusCode::ACCEPTED, &body, new.payment_id.0)
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
        op_id.0,
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
    let Ok(Some(row)) = payments::find(&state.pool, new.payment_id).await else {
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

fn metadata(value: Option<&BTreeMap<String, String>>) -> Result<Value, ApiError> {
    value.map_or(Ok(json!({})), validate::check_metadata)
}

/// The payment a capture, cancel or refund is about, in the path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct PaymentIdPath {
    /// The payment's id, `pay_…`.
    #[param(example = "pay_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a")]
    id: String,
}

/// What every `POST /v1/payments/{id}/…` takes besides its body: the
/// payment's id, [`IdempotencyKeyHeader`] and [`PreferHeader`] (read by hand, so only
/// described).
pub struct PaymentOperationParams;

impl utoipa::IntoParams for PaymentOperationParams {
    fn into_params(
        parameter_in: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        let mut params = PaymentIdPath::into_params(&parameter_in);
        params.extend(IdempotencyKeyHeader::into_params(&parameter_in));
        params.extend(PreferHeader::into_params(&parameter_in));
        params
    }
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
