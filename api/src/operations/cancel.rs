//! `POST /v1/payments/:id/cancel`: cancel a payment not yet processed at
//! once, or void an authorization at the processor.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use common::db::lifecycle::Audit;
use common::db::operations::NewOperation;
use common::db::payments::{self, PaymentRow};
use common::domain::Kind;
use common::domain::{PaymentStatus, Scope};
use serde::Deserialize;

use super::PaymentOperationParams;
use super::*;
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::idempotency::{self, Claim};
use crate::http::request::{JsonRequest, Sent, Submission, Submitted};
use crate::http::wait::outcome_unknown;
use crate::payments::view::{view, Expand};
use crate::payments::wire::Payment;
use crate::state::AppState;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(cancel))
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

impl JsonRequest for CancelRequest {
    fn when_absent() -> Option<Self> {
        Some(Self::default())
    }
}

impl Submission for CancelRequest {
    const SCOPE: Scope = Scope::PaymentsWrite;
}

pub(super) fn not_cancellable() -> ApiError {
    ApiError::bad_request(
        StatusCode::BAD_REQUEST,
        "payment_not_cancellable",
        "Captured, failed and cancelled payments cannot be cancelled; refund a captured payment instead.",
    )
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
    let (claim, row) = match claim_and_find(&state, &sent, id, "cancel").await? {
        Ok(claimed) => claimed,
        Err(replay) => return Ok(replay),
    };
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
