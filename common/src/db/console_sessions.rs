//! The `console_sessions` table: operator console sign-ins. The cookie holds
//! a random secret; this table keeps only its SHA-256, the operator key it
//! belongs to, its CSRF token and its expiry. A session of a revoked key is
//! no session.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A live session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub key_id: Uuid,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Opens a session of `key_id` that ends at `expires_at`, and removes the
/// sessions that have expired (sign-out removes them too), so the table
/// holds no more than the sessions of the last `CONSOLE_SESSION_TTL`.
pub async fn create<'e>(
    db: impl PgExecutor<'e>,
    token_hash: &[u8],
    key_id: Uuid,
    csrf_token: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "WITH expired AS (DELETE FROM console_sessions WHERE expires_at < now())
         INSERT INTO console_sessions (token_hash, key_id, csrf_token, expires_at)
         VALUES ($1, $2, $3, $4)",
        token_hash,
        key_id,
        csrf_token,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The live session with this token hash: not expired, its key an operator
/// key not revoked.
pub async fn find<'e>(
    db: impl PgExecutor<'e>,
    token_hash: &[u8],
) -> sqlx::Result<Option<SessionRow>> {
    sqlx::query_as!(
        SessionRow,
        "SELECT s.key_id, s.csrf_token, s.expires_at
         FROM console_sessions s JOIN api_keys k ON k.id = s.key_id
         WHERE s.token_hash = $1 AND s.expires_at > now()
           AND k.revoked_at IS NULL AND k.merchant_id IS NULL",
        token_hash,
    )
    .fetch_optional(db)
    .await
}

/// Ends a session (sign-out); also removes sessions that have expired.
pub async fn delete<'e>(db: impl PgExecutor<'e>, token_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM console_sessions WHERE token_hash = $1 OR expires_at < now()",
        token_hash,
    )
    .execute(db)
    .await?;
    Ok(())
}
