//! `Idempotency-Key` on every `POST` that creates something: parsing the
//! header, the request hash, and the key's life around the write.
//!
//! [`begin`] claims the key (or answers with the stored response, a `409`
//! while the first request runs, a `422` for another request); the handler
//! writes and calls [`Claim::complete`] in the same transaction, which
//! succeeds only while this request still owns the key; on an error before
//! the commit, [`Claim::abandon`] frees the key for the client's retry. The
//! key's lock outlives the request holding it (`REQUEST_TIMEOUT` + a
//! margin), so one key makes one object whatever the timing. Keys older than
//! `IDEMPOTENCY_KEY_TTL_HOURS` are deleted by [`reaper`].

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::db;
use common::domain::IdempotencyKey;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::{ApiError, DomainResultExt as _};
use crate::AppState;

/// How often expired keys are deleted.
const REAP_INTERVAL: Duration = Duration::from_secs(600);

/// Deletes keys older than `ttl` now and every [`REAP_INTERVAL`], until
/// `shutdown`. Every API process runs it; the deletes do not conflict.
pub async fn reaper(pool: sqlx::PgPool, ttl: Duration, shutdown: CancellationToken) {
    loop {
        match db::idempotency::reap(&pool, ttl).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "reaped expired idempotency keys"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "reaping idempotency keys failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(REAP_INTERVAL) => {}
        }
    }
}

/// How much longer than `REQUEST_TIMEOUT` a key stays locked by its request.
/// A request is cut at `REQUEST_TIMEOUT`, so no live request ever loses its
/// key to a retry; after that, a retry takes over the key of one that died.
const LOCK_MARGIN: Duration = Duration::from_secs(10);

/// What [`begin`] found.
pub enum Begun {
    /// No `Idempotency-Key`: go ahead.
    Unkeyed,
    /// The key is ours: write, then complete it in the same transaction.
    Claimed(Claim),
    /// The same request finished before: this is its stored answer.
    Replay(Response),
}

/// A key this request holds.
pub struct Claim {
    merchant_id: Uuid,
    key: IdempotencyKey,
    owner: Uuid,
}

impl Claim {
    /// Stores the answer with the write's transaction. Fails with `409`
    /// when another request took the key over: the caller must not commit.
    pub async fn complete<'e>(
        &self,
        db: impl sqlx::PgExecutor<'e>,
        status: StatusCode,
        body: &Value,
        payment_id: Uuid,
    ) -> Result<(), ApiError> {
        let owned = db::idempotency::complete(
            db,
            self.merchant_id,
            self.key.as_str(),
            self.owner,
            status.as_u16(),
            body,
            payment_id,
        )
        .await?;
        if owned {
            Ok(())
        } else {
            tracing::warn!("lost the idempotency key before committing; rolled back");
            Err(key_in_use())
        }
    }

    /// Frees the key after a failure before the commit (only if we still own
    /// it and it is not completed). Best effort: if the database is down the
    /// lock simply expires.
    pub async fn abandon(&self, state: &AppState) {
        let _ =
            db::idempotency::abandon(&state.pool, self.merchant_id, self.key.as_str(), self.owner)
                .await;
    }
}

/// Claims the request's `Idempotency-Key`, if it has one (parsed at the
/// edge: [`crate::request::Sent::begin`]). `route` names the operation
/// (`POST /v1/payments`), so one key cannot stand for two different
/// operations.
pub async fn begin(
    state: &AppState,
    merchant_id: Uuid,
    key: Option<&IdempotencyKey>,
    route: &str,
    body: &[u8],
) -> Result<Begun, ApiError> {
    let Some(key) = key.cloned() else {
        return Ok(Begun::Unkeyed);
    };
    let owner = Uuid::new_v4();
    let lock = state.settings.request_timeout + LOCK_MARGIN;
    let hash = request_hash(route, body);
    match db::idempotency::begin(&state.pool, merchant_id, key.as_str(), &hash, lock, owner).await?
    {
        db::idempotency::Begin::Started => Ok(Begun::Claimed(Claim {
            merchant_id,
            key,
            owner,
        })),
        db::idempotency::Begin::InFlight => Err(key_in_use()),
        db::idempotency::Begin::Mismatch => Err(ApiError::idempotency(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "This Idempotency-Key was used with a different request.",
        )),
        db::idempotency::Begin::Completed { status, body } => {
            state.metrics.idempotent_replays.inc();
            Ok(Begun::Replay(replay(state, route, status, body)))
        }
    }
}

/// `result` as it is, after freeing the key when it is an error: the write
/// the key was claimed for did not commit, so the client's retry may take
/// the key again.
pub async fn abandon_on_error<T>(
    state: &AppState,
    claim: Option<&Claim>,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    if result.is_err() {
        if let Some(claim) = claim {
            claim.abandon(state).await;
        }
    }
    result
}

pub fn key_in_use() -> ApiError {
    ApiError::idempotency(
        StatusCode::CONFLICT,
        "idempotency_key_in_use",
        "A request with this Idempotency-Key is still being processed. Retry shortly.",
    )
}

/// The route whose first answer carries a `Location` (the payment it
/// created); no other keyed route's answer has one.
pub(crate) const CREATE_PAYMENT_ROUTE: &str = "POST /v1/payments";

/// Replays a stored response for a repeated idempotent request, with the
/// headers the first answer had: `Location` only for a created payment
/// (a capture, cancel or refund answered without one).
fn replay(state: &AppState, route: &str, status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
    let location = (route == CREATE_PAYMENT_ROUTE)
        .then(|| body.get("id").and_then(Value::as_str))
        .flatten()
        .and_then(|id| crate::wire::payment_location(&state.settings.public_base_url, id));
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    if let Some(location) = location {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// The `Idempotency-Key` header, if sent: `400` when it is not a key.
pub(crate) fn parse_header(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::invalid(
            "Idempotency-Key",
            "invalid_idempotency_key",
            "Idempotency-Key may contain only visible ASCII characters.",
        )
    })?;
    IdempotencyKey::parse(text)
        .map(Some)
        .invalid("Idempotency-Key", "invalid_idempotency_key")
}

/// Hash identifying a request for idempotency: the route and the body in
/// canonical form (keys sorted, no insignificant whitespace), so the same
/// request re-sent with other formatting still matches.
fn request_hash(route: &str, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => canonical(&value, &mut hasher),
        Err(_) => hasher.update(body),
    }
    hasher.finalize().into()
}

fn canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                hasher.update(serde_json::to_string(key).unwrap_or_default().as_bytes());
                hasher.update(b":");
                canonical(&map[key], hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                canonical(item, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        other => hasher.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_ignores_formatting_and_key_order_but_not_the_route() {
        let route = "POST /v1/payments";
        let a = request_hash(route, br#"{"amount":1,"currency":"usd"}"#);
        let b = request_hash(route, b"{ \"currency\" : \"usd\",\n \"amount\": 1 }");
        let c = request_hash(route, br#"{"amount":2,"currency":"usd"}"#);
        let d = request_hash(
            "POST /v1/payments/x/refund",
            br#"{"amount":1,"currency":"usd"}"#,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
