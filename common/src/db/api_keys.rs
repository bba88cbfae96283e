//! Merchants, their API keys, and operator keys. Keys are stored only as
//! SHA-256 hashes.
//!
//! Two principals share the table. A merchant key has a `merchant_id` and
//! merchant scopes (`payments:read`, `payments:write`); it only ever sees
//! that merchant's data. An operator key has no `merchant_id` and the scopes
//! `{admin}`; it reaches the operator endpoints (the dead-letter queue, shared
//! by every merchant) and nothing of a merchant's. The constraint
//! `api_keys_principal_check` holds this for every writer.

use sqlx::PgExecutor;
use uuid::Uuid;

/// The merchant used when none is named.
pub const DEFAULT_MERCHANT: &str = "default";

/// The check constraint that keeps operators and merchants apart.
pub const PRINCIPAL_CONSTRAINT: &str = "api_keys_principal_check";

/// A live key, as the API needs it to authenticate a request.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: Uuid,
    /// `None`: an operator key.
    pub merchant_id: Option<Uuid>,
    pub scopes: Vec<String>,
}

/// The merchant's id, creating the merchant if the name is new.
pub async fn ensure_merchant<'e>(db: impl PgExecutor<'e>, name: &str) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        "INSERT INTO merchants (id, name) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
         RETURNING id",
        Uuid::now_v7(),
        name,
    )
    .fetch_one(db)
    .await
}

/// Inserts a merchant key. The database refuses `admin` among `scopes`
/// ([`PRINCIPAL_CONSTRAINT`]).
pub async fn insert<'e>(
    db: impl PgExecutor<'e>,
    merchant_id: Uuid,
    name: &str,
    prefix: &str,
    secret_hash: &[u8],
    scopes: &[String],
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        "INSERT INTO api_keys (id, merchant_id, name, prefix, secret_hash, scopes)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id",
        Uuid::now_v7(),
        merchant_id,
        name,
        prefix,
        secret_hash,
        scopes,
    )
    .fetch_one(db)
    .await
}

/// Inserts an operator key: no merchant, scopes `{admin}`.
pub async fn insert_operator<'e>(
    db: impl PgExecutor<'e>,
    name: &str,
    prefix: &str,
    secret_hash: &[u8],
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        "INSERT INTO api_keys (id, merchant_id, name, prefix, secret_hash, scopes)
         VALUES ($1, NULL, $2, $3, $4, ARRAY[$5])
         RETURNING id",
        Uuid::now_v7(),
        name,
        prefix,
        secret_hash,
        crate::domain::OPERATOR_SCOPE,
    )
    .fetch_one(db)
    .await
}

/// The unrevoked key with this secret hash.
pub async fn find_by_hash<'e>(
    db: impl PgExecutor<'e>,
    secret_hash: &[u8],
) -> sqlx::Result<Option<ApiKeyRow>> {
    sqlx::query_as!(
        ApiKeyRow,
        "SELECT id, merchant_id, scopes FROM api_keys
         WHERE secret_hash = $1 AND revoked_at IS NULL",
        secret_hash,
    )
    .fetch_optional(db)
    .await
}

/// Revokes a key by id; `false` if there was no such live key.
pub async fn revoke<'e>(db: impl PgExecutor<'e>, id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        id,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A key as an operator lists it (never the secret).
#[derive(Debug, Clone)]
pub struct ApiKeyListing {
    pub id: Uuid,
    /// `None`: an operator key.
    pub merchant: Option<String>,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn list<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Vec<ApiKeyListing>> {
    sqlx::query_as!(
        ApiKeyListing,
        r#"SELECT k.id, m.name AS "merchant?", k.name, k.prefix, k.scopes, k.created_at,
                  k.revoked_at
           FROM api_keys k LEFT JOIN merchants m ON m.id = k.merchant_id
           ORDER BY k.created_at"#,
    )
    .fetch_all(db)
    .await
}
