//! `POST /v1/charges`: charges a test token, once per idempotency key, under
//! whatever faults are switched on.
//!
//! A request goes through, in order: counted in `requests`; validated (`400`);
//! its idempotency key locked; the latency fault; the outage fault (`503`);
//! the error fault (`500`); then either the stored answer is replayed or the
//! card is charged and the answer stored; the key is unlocked; finally the
//! timeout fault may hold the answer back so the client gives up not knowing
//! that the charge happened. Faults store nothing, so a retry can succeed.
//!
//! `GET /v1/charges?idempotency_key=<key>` tells a client that lost the
//! answer what happened ([`crate::idempotency`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::processor::{ChargeApproved, ChargeDeclined, ChargeRequest};
use rand::Rng;
use serde::Serialize;

use crate::cards::{self, Verdict};
use crate::error::SimError;
use crate::faults;
use crate::idempotency::{self, LookupQuery};
use crate::state::{Sim, StoredAnswer};

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

    // The key stays locked from here until the answer is stored, the
    // latency fault (the issuer round-trip) included, so a concurrent request
    // with the same key waits and then replays instead of charging again.
    let slot = sim.slot(&key);
    let mut stored = slot.lock().await;
    let settings = faults::before_acting(&sim).await.inspect_err(|error| {
        tracing::debug!(
            reference = %request.reference,
            code = error.code(),
            "charge refused by a fault"
        );
    })?;
    if let Some(answer) = stored.as_ref() {
        sim.count_replay();
        tracing::debug!(
            reference = %request.reference,
            idempotency_key = %key,
            outcome = "replay",
            "charge replayed"
        );
        return Ok(answer.clone().into_response());
    }
    // No await from here until the answer is stored: once the charge is
    // counted, a dropped connection cannot lose its answer.
    let answer = charge(&sim, &key, &request)?;
    *stored = Some(answer.clone());
    drop(stored);

    faults::maybe_hold_back(&sim, &settings).await;
    Ok(answer.into_response())
}

/// `GET /v1/charges?idempotency_key=<key>`: what happened to the charge sent
/// with that key ([`idempotency::lookup`]). Counted in `lookups`, not in
/// `requests`, which counts charge attempts.
async fn lookup_charge(
    State(sim): State<Arc<Sim>>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Response, SimError> {
    sim.count_lookup();
    let key = idempotency::from_query(query)?;
    idempotency::lookup(&sim, &key).await
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
            let answer = render(StatusCode::OK, &approved)?;
            sim.count_approval(&request.reference);
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
            let answer = render(StatusCode::PAYMENT_REQUIRED, &declined)?;
            sim.count_decline();
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

/// Serialises once, so every replay sends the very same bytes.
fn render(status: StatusCode, body: &impl Serialize) -> Result<StoredAnswer, SimError> {
    let body = serde_json::to_vec(body).map_err(|e| {
        tracing::error!(error = %e, "serialising a charge answer");
        SimError::internal()
    })?;
    Ok(StoredAnswer {
        status,
        body: Bytes::from(body),
    })
}

fn digits(rng: &mut impl Rng, count: usize) -> String {
    (0..count)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}
