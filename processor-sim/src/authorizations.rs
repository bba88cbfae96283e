//! What can be done to an authorization (a charge approved with
//! `capture: false`): `POST /v1/charges/:id/capture` moves its money, all or
//! part (the rest is released), and `POST /v1/charges/:id/void` releases it
//! all. Either is final: a captured charge cannot be voided or captured
//! again, a voided one cannot be captured.
//!
//! Both run once per idempotency key with the charges' faults
//! ([`idempotency::run_once`]); their keys are scoped to the charge in the
//! path. A `GET` at the same path with `?idempotency_key=` is the lookup
//! ([`idempotency::lookup`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use common::processor::{CaptureRequest, CaptureSucceeded, VoidRequest, VoidSucceeded};
use serde::de::DeserializeOwned;

use crate::error::SimError;
use crate::idempotency::{self, LookupQuery};
use crate::state::{Operation, Sim, StoredAnswer};

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/v1/charges/{id}/capture",
            post(capture).get(lookup_capture),
        )
        .route("/v1/charges/{id}/void", post(void).get(lookup_void))
}

async fn capture(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    sim.count_capture_request();
    let charge = charge_id(path)?;
    let key = idempotency::from_header(&headers)?;
    let request: CaptureRequest = optional_json(&body)?;
    if request.amount.is_some_and(|amount| amount <= 0) {
        return Err(SimError::invalid_request(
            "amount must be a positive integer in minor units",
        ));
    }
    let operation = Operation::Capture {
        charge: charge.clone(),
    };
    idempotency::run_once(&sim, operation, &key, || {
        let captured = match sim.capture(&charge, request.amount) {
            Ok(captured) => captured,
            Err(refusal) => return StoredAnswer::refusal(&refusal),
        };
        let answer = CaptureSucceeded {
            id: format!("cap_{}", uuid::Uuid::new_v4().simple()),
            charge: charge.clone(),
            amount: captured.amount,
            currency: captured.currency,
            captured: true,
            amount_released: captured.released,
        };
        tracing::debug!(
            charge_id = %charge,
            capture_id = %answer.id,
            idempotency_key = %key,
            amount = answer.amount,
            outcome = "captured",
            "authorization captured"
        );
        StoredAnswer::json(StatusCode::OK, &answer)
    })
    .await
}

async fn lookup_capture(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Response, SimError> {
    let charge = charge_id(path)?;
    idempotency::lookup(&sim, Operation::Capture { charge }, query).await
}

async fn void(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SimError> {
    sim.count_void_request();
    let charge = charge_id(path)?;
    let key = idempotency::from_header(&headers)?;
    let VoidRequest {} = optional_json(&body)?;
    let operation = Operation::Void {
        charge: charge.clone(),
    };
    idempotency::run_once(&sim, operation, &key, || {
        let voided = match sim.void(&charge) {
            Ok(voided) => voided,
            Err(refusal) => return StoredAnswer::refusal(&refusal),
        };
        let answer = VoidSucceeded {
            id: format!("void_{}", uuid::Uuid::new_v4().simple()),
            charge: charge.clone(),
            voided: true,
            amount: voided.released,
            currency: voided.currency,
        };
        tracing::debug!(
            charge_id = %charge,
            void_id = %answer.id,
            idempotency_key = %key,
            outcome = "voided",
            "authorization voided"
        );
        StoredAnswer::json(StatusCode::OK, &answer)
    })
    .await
}

async fn lookup_void(
    State(sim): State<Arc<Sim>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Response, SimError> {
    let charge = charge_id(path)?;
    idempotency::lookup(&sim, Operation::Void { charge }, query).await
}

/// The charge id in the path, answered in the error envelope if unreadable
/// rather than with axum's plain-text rejection.
fn charge_id(path: Result<Path<String>, PathRejection>) -> Result<String, SimError> {
    path.map(|Path(id)| id)
        .map_err(|rejection| SimError::invalid_request(rejection.body_text()))
}

/// A JSON body that may be left out: an empty body is `T::default()`, since
/// every field of these requests is optional and gateways accept a bare
/// `POST` here.
fn optional_json<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, SimError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| SimError::invalid_json(&e))
}
