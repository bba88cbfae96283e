//! `POST /v1/charges`: charges a test token, once per idempotency key, under
//! whatever faults are switched on.
//!
//! A request is counted in `requests`, validated (`400`), then run once per
//! key ([`idempotency::run_once`], which applies the faults). The charge is
//! written in the charge book so it can later be captured, voided or
//! refunded.
//!
//! `GET /v1/charges?idempotency_key=<key>` tells a client that lost the
//! answer what happened ([`idempotency::lookup`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use common::processor::{ChargeApproved, ChargeDeclined, ChargeRequest};
use rand::Rng;

use crate::book::{ChargeRecord, ChargeState};
use crate::cards::{self, Verdict};
use crate::error::SimError;
use crate::idempotency::{self, LookupQuery};
use crate::state::{Operation, Sim, StoredAnswer};

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new().route("/v1/charges", post(create_charge).get(lookup_charge))
}

async fn create_charge(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    sim.count_request();
    let key = idempotency::from_header(&headers)?;
    let request: ChargeRequest =
        serde_json::from_slice(&body).map_err(|e| SimError::invalid_json(&e))?;
    validate(&request)?;
    idempotency::run_once(&sim, Operation::Charge, &key, || {
        charge(&sim, &key, &request)
    })
    .await
}

/// `GET /v1/charges?idempotency_key=<key>`: what happened to the charge sent
/// with that key. Counted in `lookups`, not in `requests`, which counts
/// charge attempts.
async fn lookup_charge(
    State(sim): State<Arc<Sim>>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Response, SimError> {
    idempotency::lookup(&sim, Operation::Charge, query).await
}

fn validate(request: &ChargeRequest) -> Result<(), SimError> {
    if request.amount <= 0 {
        return Err(SimError::invalid_request(
            "amount must be a positive integer in minor units",
        ));
    }
    if !request.token.starts_with("tok_") {
        // The token itself is not echoed: it must not end up in logs.
        return Err(SimError::invalid_request("token must start with tok_"));
    }
    Ok(())
}

/// Charges the card, counts the outcome and renders the answer to store.
fn charge(sim: &Sim, key: &str, request: &ChargeRequest) -> Result<StoredAnswer, SimError> {
    let card = cards::lookup(&request.token);
    let record = |state| ChargeRecord {
        amount: request.amount,
        currency: request.currency.clone(),
        refund_verdict: card.refund_verdict,
        state,
        refunded: 0,
    };
    let mut rng = rand::thread_rng();
    let id = format!("ch_{}", uuid::Uuid::new_v4().simple());
    let network_transaction_id = digits(&mut rng, 15);
    let risk_score = rng.gen_range(0..=99);
    match card.verdict {
        Verdict::Approve => {
            let approved = ChargeApproved {
                id,
                approved: true,
                captured: request.capture,
                authorization_code: digits(&mut rng, 6),
                avs_result: "Y".to_owned(),
                cvv_result: "M".to_owned(),
                network_transaction_id,
                risk_score,
                card: card.details(),
            };
            let answer = StoredAnswer::json(StatusCode::OK, &approved)?;
            let state = if request.capture {
                ChargeState::Captured {
                    amount: request.amount,
                }
            } else {
                ChargeState::Authorized
            };
            sim.record_approval(&approved.id, &request.reference, record(state));
            tracing::debug!(
                reference = %request.reference,
                idempotency_key = %key,
                charge_id = %approved.id,
                outcome = "approved",
                "charge approved"
            );
            Ok(answer)
        }
        Verdict::Decline {
            code,
            decline_code,
            message,
        } => {
            let declined = ChargeDeclined {
                id,
                approved: false,
                code: code.to_owned(),
                decline_code: decline_code.to_owned(),
                message: message.to_owned(),
                network_transaction_id,
                risk_score,
                card: card.details(),
            };
            let answer = StoredAnswer::json(StatusCode::PAYMENT_REQUIRED, &declined)?;
            sim.record_decline(&declined.id, record(ChargeState::Declined));
            tracing::debug!(
                reference = %request.reference,
                idempotency_key = %key,
                charge_id = %declined.id,
                outcome = "declined",
                decline_code,
                "charge declined"
            );
            Ok(answer)
        }
    }
}

/// `count` random decimal digits, as authorization codes and network ids are.
fn digits(rng: &mut impl Rng, count: usize) -> String {
    (0..count)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}
