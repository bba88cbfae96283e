//! `POST /v1/payments/:id/capture`: capture an authorization, in part or
//! in full, with what the capture applies to the payment.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::Response;
use common::db::operations::NewOperation;
use common::db::payments::PaymentRow;
use common::domain::Kind;
use common::domain::Scope;
use serde::Deserialize;
use serde_json::Value;

use super::PaymentOperationParams;
use super::*;
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::idempotency;
use crate::http::request::{JsonRequest, Submission, Submitted};
use crate::payments::validate;
use crate::payments::wire::Payment;
use crate::state::AppState;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(capture))
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

impl JsonRequest for CaptureRequest {
    fn when_absent() -> Option<Self> {
        Some(Self::default())
    }
}

impl Submission for CaptureRequest {
    const SCOPE: Scope = Scope::PaymentsWrite;
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
    let (claim, row) = match claim_and_find(&state, &sent, id, "capture").await? {
        Ok(claimed) => claimed,
        Err(replay) => return Ok(replay),
    };
    let merged = check_merged_metadata(&row, &metadata);
    idempotency::abandon_on_error(&state, claim.as_ref(), merged).await?;
    let new = NewOperation {
        amount: body.amount,
        statement_descriptor: body.statement_descriptor,
        metadata,
        ..new_operation(id, Kind::Capture, &sent)
    };
    create_operation(&state, &sent, claim, new).await
}
