//! Idempotency keys: reading them from a request, and the lookup that tells a
//! client what happened to an operation whose answer it lost.
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
use crate::state::Sim;

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
pub(crate) fn from_query(
    query: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<String, SimError> {
    query
        .ok()
        .and_then(|Query(query)| query.idempotency_key)
        .map(|key| key.trim().to_owned())
        .filter(|key| !key.is_empty())
        .ok_or_else(SimError::missing_lookup_key)
}

/// Answers a lookup of `key`: see the module doc. Shared by every endpoint
/// that has a lookup, so all of them follow the same rules.
pub(crate) async fn lookup(sim: &Sim, key: &str) -> Result<Response, SimError> {
    faults::before_acting(sim).await?;
    // `find_slot` never creates one: a lookup leaves no trace a later
    // operation could mistake for its own.
    let Some(slot) = sim.find_slot(key) else {
        return Err(SimError::operation_not_found());
    };
    // Waits while an operation with this key holds the slot, so the answer
    // is the one it stores, never a "not found" that turns out wrong.
    let stored = slot.lock().await.clone();
    match stored {
        Some(answer) => {
            tracing::debug!(idempotency_key = %key, outcome = "found", "lookup answered");
            Ok(answer.into_response())
        }
        None => Err(SimError::operation_not_found()),
    }
}
