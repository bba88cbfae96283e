//! Idempotency keys for `POST /v1/payments`, scoped per merchant.
//!
//! A request first claims its key in a short committed statement
//! ([`begin`]); a concurrent request with the same key then sees it in
//! flight (409). The payment and the key's completion are written in one
//! transaction ([`complete`]), so a stored response always matches a payment
//! that exists. A claim whose request died is taken over after
//! `locked_until`, which the caller sets past the longest a request can
//! live. Each claim carries its request's `owner` token, and completing or
//! abandoning a key is conditional on it: a request that somehow outlived its
//! lock can never complete a key another request has taken over, so one key
//! makes one payment whatever the timing.

use std::time::Duration;

use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgExecutor;
use uuid::Uuid;

/// What the key's state means for the request holding it.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The key is ours: go ahead.
    Started,
    /// The same request is still running elsewhere.
    InFlight,
    /// The same request finished: replay its response.
    Completed { status: u16, body: Value },
    /// The key was used for a different request.
    Mismatch,
}

struct KeyRow {
    request_hash: Vec<u8>,
    state: String,
    response_status: Option<i16>,
    response_body: Option<Json<Value>>,
}

pub async fn begin<'e, E>(
    db: E,
    merchant_id: Uuid,
    key: &str,
    request_hash: &[u8],
    lock_for: Duration,
    owner: Uuid,
) -> sqlx::Result<Begin>
where
    E: PgExecutor<'e> + Copy,
{
    let started = sqlx::query_scalar!(
        r#"INSERT INTO idempotency_keys (merchant_id, key, request_hash, state, locked_until, owner)
           VALUES ($1, $2, $3, 'in_flight', now() + make_interval(secs => $4), $5)
           ON CONFLICT (merchant_id, key) DO UPDATE
               SET request_hash = EXCLUDED.request_hash,
                   locked_until = EXCLUDED.locked_until,
                   owner = EXCLUDED.owner,
                   created_at = now()
               WHERE idempotency_keys.state = 'in_flight'
                 AND idempotency_keys.locked_until < now()
           RETURNING true AS "started!""#,
        merchant_id,
        key,
        request_hash,
        lock_for.as_secs_f64(),
        owner,
    )
    .fetch_optional(db)
    .await?;
    if started.is_some() {
        return Ok(Begin::Started);
    }
    let row = sqlx::query_as!(
        KeyRow,
        r#"SELECT request_hash, state, response_status,
                  response_body AS "response_body: Json<Value>"
           FROM idempotency_keys WHERE merchant_id = $1 AND key = $2"#,
        merchant_id,
        key,
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        // Reaped between the two statements: extremely rare; the client's
        // retry will start afresh.
        return Ok(Begin::InFlight);
    };
    if row.request_hash != request_hash {
        return Ok(Begin::Mismatch);
    }
    Ok(
        match (row.state.as_str(), row.response_status, row.response_body) {
            ("completed", Some(status), Some(Json(body))) => Begin::Completed {
                status: u16::try_from(status).unwrap_or(500),
                body,
            },
            _ => Begin::InFlight,
        },
    )
}

/// Stores the response. Call in the transaction that created the payment;
/// `false` means `owner` no longer holds the key (another request took it
/// over), and the caller must roll that transaction back.
#[must_use = "a key no longer owned means the payment must not be committed"]
pub async fn complete<'e>(
    db: impl PgExecutor<'e>,
    merchant_id: Uuid,
    key: &str,
    owner: Uuid,
    status: u16,
    body: &Value,
    payment_id: Uuid,
) -> sqlx::Result<bool> {
    // Sent as text into a `json` column: stored as written, so a replay has
    // the first answer's keys in the same order (`jsonb` would sort them).
    let body = serde_json::to_string(body).map_err(|err| sqlx::Error::Encode(err.into()))?;
    let result = sqlx::query!(
        "UPDATE idempotency_keys
         SET state = 'completed', response_status = $4, response_body = $5::text::json,
             payment_id = $6
         WHERE merchant_id = $1 AND key = $2 AND owner = $3 AND state = 'in_flight'",
        merchant_id,
        key,
        owner,
        i16::try_from(status).unwrap_or(500),
        body,
        payment_id,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Releases a claim whose request failed before creating anything, so the
/// client can retry with the same key at once.
pub async fn abandon<'e>(
    db: impl PgExecutor<'e>,
    merchant_id: Uuid,
    key: &str,
    owner: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM idempotency_keys
         WHERE merchant_id = $1 AND key = $2 AND owner = $3 AND state = 'in_flight'",
        merchant_id,
        key,
        owner,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes keys older than `ttl`; returns how many.
pub async fn reap<'e>(db: impl PgExecutor<'e>, ttl: Duration) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        ttl.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}
