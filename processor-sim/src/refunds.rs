//! `POST /v1/refunds`: gives back part or all of what a charge captured, once
//! per idempotency key, under the charges' faults
//! ([`idempotency::run_once`]). The charge book checks and records each
//! refund in one step, so the refunds of a charge never add up to more than
//! it captured, whatever the concurrency. A card whose issuer refuses refunds
//! (`tok_refundFails`) gets a `402` [`RefundDeclined`].
//!
//! `GET /v1/refunds?idempotency_key=<key>` is the lookup
//! ([`idempotency::lookup`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use common::processor::{
    RefundDeclined, RefundRequest, RefundStatus, RefundSucceeded, REFUND_DECLINED_CODE,
};

use crate::book::Refunded;
use crate::error::SimError;
use crate::idempotency::{self, LookupQuery};
use crate::state::{Operation, Sim, StoredAnswer};

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new().route("/v1/refunds", post(create_refund).get(lookup_refund))
}

async fn create_refund(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    let key = idempotency::from_header(&headers)?;
    let request: RefundRequest =
        serde_json::from_slice(&body).map_err(|e| SimError::invalid_json(&e))?;
    validate(&request)?;
    idempotency::run_once(&sim, Operation::Refund, &key, || {
        refund(&sim, &key, &request)
    })
    .await
}

async fn lookup_refund(
    State(sim): State<Arc<Sim>>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Response, SimError> {
    idempotency::lookup(&sim, Operation::Refund, query).await
}

fn validate(request: &RefundRequest) -> Result<(), SimError> {
    if request.amount <= 0 {
        return Err(SimError::invalid_request(
            "amount must be a positive integer in minor units",
        ));
    }
    if request.charge.trim().is_empty() {
        return Err(SimError::invalid_request("charge must not be empty"));
    }
    if request.reference.trim().is_empty() {
        // Without it a refund paid twice could not be detected.
        return Err(SimError::invalid_request("reference must not be empty"));
    }
    Ok(())
}

/// Refunds through the charge book and renders the answer to store.
fn refund(sim: &Sim, key: &str, request: &RefundRequest) -> Result<StoredAnswer, SimError> {
    let refunded = match sim.refund(&request.charge, request.amount, &request.reference) {
        Ok(refunded) => refunded,
        Err(refusal) => return StoredAnswer::refusal(&refusal),
    };
    let id = format!("re_{}", uuid::Uuid::new_v4().simple());
    match refunded {
        Refunded::Paid { currency } => {
            tracing::debug!(
                charge_id = %request.charge,
                refund_id = %id,
                reference = %request.reference,
                idempotency_key = %key,
                amount = request.amount,
                outcome = "succeeded",
                "refund paid"
            );
            let answer = RefundSucceeded {
                id,
                charge: request.charge.clone(),
                amount: request.amount,
                currency,
                status: RefundStatus::Succeeded,
                reference: request.reference.clone(),
            };
            StoredAnswer::json(StatusCode::OK, &answer)
        }
        Refunded::Declined { currency, message } => {
            tracing::debug!(
                charge_id = %request.charge,
                refund_id = %id,
                reference = %request.reference,
                idempotency_key = %key,
                outcome = "declined",
                "refund declined"
            );
            let answer = RefundDeclined {
                id,
                charge: request.charge.clone(),
                amount: request.amount,
                currency,
                status: RefundStatus::Failed,
                code: REFUND_DECLINED_CODE.to_owned(),
                message: message.to_owned(),
                reference: request.reference.clone(),
            };
            StoredAnswer::json(StatusCode::PAYMENT_REQUIRED, &answer)
        }
    }
}
