//! Idempotency keys: reading them from a request, running an operation once
//! per key, and the lookup that tells a client what happened to an operation
//! whose answer it lost.
//!
//! An operation (charge, capture, void, refund) goes through, in order: its
//! key's slot locked; the faults before acting ([`faults::before_acting`]);
//! then either the stored answer is replayed or the operation acts and its
//! answer is stored; the slot unlocked; finally the timeout fault may hold
//! the answer back so the client gives up not knowing what happened. Faults
//! store nothing, so a retry can succeed.
//!
//! A lookup (`GET …?idempotency_key=<key>`) reads the key's slot and never
//! acts: it answers the stored answer exactly as first sent (status and
//! bytes), waits first if an operation with that key is in progress (its
//! slot is locked), and answers `404` with
//! [`common::processor::OPERATION_NOT_FOUND_CODE`] when nothing was stored,
//! so the client knows a retry with the same key cannot act twice. It goes
//! through the latency, outage and error faults like an operation, but not
//! the timeout fault: that one models an operation whose outcome is unknown,
//! and a lookup has no outcome of its own.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use common::processor::IDEMPOTENCY_HEADER;
use serde::Deserialize;

use crate::error::SimError;
use crate::faults;
use crate::state::{Operation, Sim, StoredAnswer};

/// The key that makes an operation idempotent. Required: without it a retry
/// could act twice, so the simulator refuses, as a strict gateway would.
pub(crate) fn from_header(headers: &HeaderMap) -> Result<String, SimError> {
    headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .map(str::to_owned)
        .ok_or_else(SimError::missing_idempotency_key)
}

/// The query string of a lookup. The field's name is
/// [`common::processor::LOOKUP_QUERY_PARAM`].
#[derive(Debug, Deserialize)]
pub(crate) struct LookupQuery {
    idempotency_key: Option<String>,
}

/// The key a lookup asks about; absent, empty or unreadable is `400`.
fn from_query(query: Result<Query<LookupQuery>, QueryRejection>) -> Result<String, SimError> {
    query
        .ok()
        .and_then(|Query(query)| query.idempotency_key)
        .map(|key| key.trim().to_owned())
        .filter(|key| !key.is_empty())
        .ok_or_else(SimError::missing_lookup_key)
}

/// Runs `act` at most once for `key`: see the module doc. `act` is
/// synchronous on purpose: nothing can interrupt it between acting and
/// storing the answer, so a dropped connection never loses an answer that
/// was counted. `Ok` from `act` is stored; `Err` (an unknown charge, a
/// failure to serialise) is sent and not stored.
pub(crate) async fn run_once(
    sim: &Sim,
    operation: Operation,
    key: &str,
    act: impl FnOnce() -> Result<StoredAnswer, SimError>,
) -> Result<Response, SimError> {
    // The key stays locked from here until the answer is stored, the
    // latency fault (the issuer round-trip) included, so a concurrent request
    // with the same key waits and then replays instead of acting again.
    let slot = sim.slot(&operation, key);
    let mut stored = slot.lock().await;
    let settings = faults::before_acting(sim).await.inspect_err(|error| {
        tracing::debug!(
            operation = operation.kind(),
            idempotency_key = %key,
            code = error.code(),
            "refused by a fault"
        );
    })?;
    if let Some(answer) = stored.as_ref() {
        sim.count_replay();
        tracing::debug!(
            operation = operation.kind(),
            idempotency_key = %key,
            outcome = "replay",
            "replayed"
        );
        return Ok(answer.clone().into_response());
    }
    let answer = act()?;
    *stored = Some(answer.clone());
    drop(stored);

    faults::maybe_hold_back(sim, &settings).await;
    Ok(answer.into_response())
}

/// Answers a lookup of `key` for `operation`: see the module doc. Shared by
/// every endpoint that has a lookup, so all of them follow the same rules.
/// Counted in `lookups`.
pub(crate) async fn lookup(
    sim: &Sim,
    operation: Operation,
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<Response, SimError> {
    sim.count_lookup();
    let key = from_query(query)?;
    faults::before_acting(sim).await?;
    // `find_slot` never creates one: a lookup leaves no trace a later
    // operation could mistake for its own.
    let Some(slot) = sim.find_slot(&operation, &key) else {
        return Err(SimError::operation_not_found());
    };
    // Waits while an operation with this key holds the slot, so the answer
    // is the one it stores, never a "not found" that turns out wrong.
    let stored = slot.lock().await.clone();
    match stored {
        Some(answer) => {
            tracing::debug!(
                operation = operation.kind(),
                idempotency_key = %key,
                outcome = "found",
                "lookup answered"
            );
            Ok(answer.into_response())
        }
        None => Err(SimError::operation_not_found()),
    }
}
