//! `POST /v1/payments/:id/refund`, and the refunds' reads
//! (`GET /v1/refunds/:id`, `GET /v1/refunds?payment_id=…`).

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::Json;
use common::db::operations::{self, NewOperation};
use common::domain::Kind;
use common::domain::{OperationId, PaymentId, RefundId, Scope};
use serde::Deserialize;

use super::PaymentOperationParams;
use super::*;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::page::{no_such_cursor, Cursor, List, PageSize};
use crate::http::request::{JsonRequest, Submission, Submitted};
use crate::payments::validate;
use crate::payments::wire::Refund;
use crate::state::AppState;
use strum::VariantNames as _;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(refund))
        .routes(routes!(list_refunds))
        .routes(routes!(retrieve_refund))
}

/// Why a payment is refunded: the request's `reason`, read as this type.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
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

const MAX_NOTES: usize = 500;

impl JsonRequest for RefundRequest {}

impl Submission for RefundRequest {
    const SCOPE: Scope = Scope::PaymentsWrite;
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
            format!(
                "`reason` is required: one of {}.",
                RefundReason::VARIANTS.join(", ")
            ),
        ));
    };
    let reason: &'static str = reason.into();
    validate::check_len("notes", &body.notes, 1, MAX_NOTES)?;
    let metadata = metadata(body.metadata.as_ref())?;
    // The payment is read only to be found (404 otherwise); the guarded
    // statement decides what it allows.
    let (claim, _payment) = match claim_and_find(&state, &sent, id, "refund").await? {
        Ok(claimed) => claimed,
        Err(replay) => return Ok(replay),
    };
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
    let row =
        operations::find_for_merchant(&state.pool, caller.merchant_id, id.into(), Kind::Refund)
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
        (status = 200, description = "A page of refunds, newest first.", body = List<Refund>),
        (status = 404, description = "No such payment (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["payments:read"]))
)]
async fn list_refunds(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<List<Refund>>, ApiError> {
    caller.require(Scope::PaymentsRead)?;
    let query: RefundListQuery = crate::http::extract::parse_query(query.as_deref().unwrap_or(""))?;
    let payment_id: PaymentId = query.payment_id.parse().map_err(|_| {
        ApiError::invalid(
            "payment_id",
            "invalid_id",
            "`payment_id` is not a payment id.",
        )
    })?;
    let limit = PageSize::MERCHANT.limit(query.limit)?;
    let starting_after = Cursor::<RefundId>::starting_after(query.starting_after.as_deref())?;
    // Another merchant's payment is unknown here too.
    find_payment(&state, &caller, payment_id).await?;
    if let Some(cursor) = starting_after {
        // A refund of another payment would page nothing: say so instead.
        let refund = operations::find(&state.pool, cursor.into()).await?;
        if !refund.is_some_and(|r| r.payment_id == payment_id.0 && r.kind == Kind::Refund) {
            return Err(no_such_cursor("starting_after", "this payment's refunds"));
        }
    }
    let rows = operations::list_for_payment(
        &state.pool,
        payment_id,
        Kind::Refund,
        starting_after.map(OperationId::from),
        limit.fetch(),
    )
    .await?;
    Ok(Json(
        List::page("/v1/refunds", rows, limit).map(|row| Refund::from_row(&row)),
    ))
}
