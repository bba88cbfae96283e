//! `POST /v1/payments` and `GET /v1/payments/:id`.

pub mod list;
pub mod receipts;
pub mod validate;
pub mod view;
pub mod wire;

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::db::{self, payments::PaymentRow};
use common::domain::{PaymentId, Scope};
use common::queue::Job;

use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorEnvelope};
use crate::http::idempotency::{self, Begun, Claim};
use crate::http::params::{IdempotencyKeyHeader, PreferHeader};
use crate::http::request::{JsonRequest, Submission, Submitted};
use crate::http::wait::{outcome_unknown, wait_until};
use crate::payments::view::ExpandQuery;
use crate::payments::wire::{CreatePayment, Payment};
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create))
        .routes(routes!(retrieve))
}

/// Accepts a payment and queues it; workers charge the card.
#[utoipa::path(
    post,
    path = "/v1/payments",
    tag = "payments",
    operation_id = "create_payment",
    summary = "Create a payment",
    description = "Validates the payment, stores it and queues it for processing, then answers `202` with the payment (`status` `pending`) and its `Location`. With `Prefer: wait=N` the answer waits until the payment is terminal (`200`) or N seconds pass (`202`). Nothing is written when the answer is a `4xx`.",
    params(IdempotencyKeyHeader, PreferHeader),
    request_body(content = CreatePayment, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted; processing follows.", body = Payment, headers(
            ("Location" = String, description = "URL of the payment."),
            ("Preference-Applied" = String, description = "With `Prefer: wait`: the wait applied (`wait=N`)."),
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`.")
        ), links(
            ("get" = (operation_id = "get_payment", parameters(("id" = "$response.body#/id")))),
            ("capture" = (operation_id = "capture_payment", parameters(("id" = "$response.body#/id")))),
            ("cancel" = (operation_id = "cancel_payment", parameters(("id" = "$response.body#/id")))),
            ("refund" = (operation_id = "refund_payment", parameters(("id" = "$response.body#/id")))),
            ("refunds" = (operation_id = "list_refunds", parameters(("payment_id" = "$response.body#/id"))))
        )),
        (status = 200, description = "With `Prefer: wait=N`: the payment became terminal in time.", body = Payment, headers(
            ("Location" = String, description = "URL of the payment."),
            ("Preference-Applied" = String, description = "The wait applied (`wait=N`)."),
            ("Idempotent-Replayed" = String, description = "`true` for a replayed answer.")
        ), links(
            ("get" = (operation_id = "get_payment", parameters(("id" = "$response.body#/id")))),
            ("capture" = (operation_id = "capture_payment", parameters(("id" = "$response.body#/id")))),
            ("cancel" = (operation_id = "cancel_payment", parameters(("id" = "$response.body#/id")))),
            ("refund" = (operation_id = "refund_payment", parameters(("id" = "$response.body#/id")))),
            ("refunds" = (operation_id = "list_refunds", parameters(("payment_id" = "$response.body#/id"))))
        )),
        (status = 409, description = "A request with this `Idempotency-Key` is still in flight.", body = ErrorEnvelope),
        (status = 422, description = "This `Idempotency-Key` was used with a different request.", body = ErrorEnvelope)
    ),
    security(("bearer" = ["payments:write"]))
)]
async fn create(
    State(state): State<AppState>,
    Submitted { body, sent }: Submitted<CreatePayment>,
) -> Result<Response, ApiError> {
    let merchant_id = sent.caller.merchant_id;
    let mut new = validate::validate(body, merchant_id)?;
    new.notify_on_finish = sent.wait.is_some();
    new.origin = sent.origin.clone();

    let claim = match sent
        .begin(&state, idempotency::CREATE_PAYMENT_ROUTE)
        .await?
    {
        Begun::Replay(response) => return Ok(response),
        Begun::Unkeyed => None,
        Begun::Claimed(claim) => Some(claim),
    };
    let inserted = insert(&state, &new, claim.as_ref()).await;
    let inserted = idempotency::abandon_on_error(&state, claim.as_ref(), inserted).await?;

    let payment_id = inserted.payment.payment_id();
    tracing::Span::current().record("payment_id", tracing::field::display(payment_id));
    tracing::info!("payment accepted");
    state.metrics.accepted.inc();
    let job = Job::process_payment(payment_id, merchant_id);
    state
        .outbox
        .publish_now(&state.broker, &job, inserted.outbox_id)
        .await;

    let Some(wait) = sent.wait else {
        return Ok(respond(
            &state,
            StatusCode::ACCEPTED,
            &inserted.payment,
            None,
        ));
    };
    // The payment is committed: from here every answer identifies it. If the
    // database fails while we wait, answer with the payment as last known
    // (`202`, its id and `Location`), never with "nothing was written".
    let row = match wait_for_terminal(&state, &inserted.payment, wait).await {
        Ok(row) => row,
        Err(err) => {
            tracing::warn!(error = ?err, "lost the database while waiting; answering with the payment as last known");
            inserted.payment.clone()
        }
    };
    let status = if is_terminal(&row) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(respond(&state, status, &row, Some(wait)))
}

/// Inserts the payment, and completes the idempotency key (if any) in the
/// same transaction, only while this request still owns the key. Until the
/// commit nothing is written, so an error before it is "nothing was
/// written"; only a failed commit leaves the outcome unknown
/// ([`outcome_unknown`]).
async fn insert(
    state: &AppState,
    new: &db::payments::NewPayment,
    claim: Option<&Claim>,
) -> Result<db::payments::Inserted, ApiError> {
    let mut tx = state.pool.begin().await?;
    let inserted = db::payments::insert(&mut tx, new, state.settings.relay_after).await?;
    if let Some(claim) = claim {
        let body = serde_json::to_value(Payment::from_row(
            &inserted.payment,
            &state.settings.public_base_url,
        ))?;
        // Another request took the key over: dropping `tx` rolls this
        // payment back, so the key makes one payment, theirs.
        claim
            .complete(&mut *tx, StatusCode::ACCEPTED, &body, inserted.payment.id)
            .await?;
    }
    tx.commit().await.map_err(outcome_unknown)?;
    Ok(inserted)
}

/// One payment, as it is now.
#[utoipa::path(
    get,
    path = "/v1/payments/{id}",
    tag = "payments",
    operation_id = "get_payment",
    summary = "Retrieve a payment",
    description = "The payment with every field; values not known yet are `null`. Another merchant's payment, or a malformed id, is `404`.",
    params(
        ("id" = String, Path, description = "The payment's id, `pay_` and a lower-case UUID.", example = "pay_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a"),
        ExpandQuery
    ),
    responses(
        (status = 200, description = "The payment.", body = Payment),
        (status = 404, description = "No such payment (of this merchant).", body = ErrorEnvelope)
    ),
    security(("bearer" = ["payments:read"]))
)]
async fn retrieve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Payment>, ApiError> {
    caller.require(Scope::PaymentsRead)?;
    // A malformed id names no payment: 404 like any other unknown id.
    let id: PaymentId = id.parse().map_err(|_| no_such_payment())?;
    tracing::Span::current().record("payment_id", tracing::field::display(id));
    let expand = view::Expand::from_query(query.as_deref())?;
    let row = db::payments::find_for_merchant(&state.pool, caller.merchant_id, id)
        .await?
        .ok_or_else(no_such_payment)?;
    Ok(Json(view::view(&state.pool, &state, &row, &expand).await?))
}

impl JsonRequest for CreatePayment {}

impl Submission for CreatePayment {
    const SCOPE: Scope = Scope::PaymentsWrite;
}

pub(crate) fn no_such_payment() -> ApiError {
    ApiError::not_found("No such payment.")
}

fn is_terminal(row: &PaymentRow) -> bool {
    row.status.is_terminal()
}

/// Holds the request until the payment is terminal or `wait` passes.
async fn wait_for_terminal(
    state: &AppState,
    row: &PaymentRow,
    wait: Duration,
) -> Result<PaymentRow, ApiError> {
    let id = row.payment_id();
    wait_until(state, row.id, wait, is_terminal, || async move {
        db::payments::find(&state.pool, id)
            .await?
            .ok_or_else(no_such_payment)
    })
    .await
}

fn respond(
    state: &AppState,
    status: StatusCode,
    row: &PaymentRow,
    wait: Option<Duration>,
) -> Response {
    let payment = Payment::from_row(row, &state.settings.public_base_url);
    let location = idempotency::payment_location(&state.settings.public_base_url, &payment.id);
    let mut response = (status, Json(payment)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    crate::http::request::preference_applied(&mut response, wait);
    response
}
