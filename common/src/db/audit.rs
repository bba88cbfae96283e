//! The `operator_audit` table: one row per operator action (who, what, on
//! what, when, with what result), written by the operator API whether the
//! action came over JSON or from the console, and listed in the console.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// One audited action.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    /// The operator key that acted; `None` for a refused sign-in.
    pub key_id: Option<Uuid>,
    pub action: String,
    pub target: String,
    pub result: String,
    pub created_at: DateTime<Utc>,
}

/// Records an action; the new row's id (the console shows it as the
/// action's outcome after a redirect, so the notice comes from this table
/// and not from a query string anyone could write).
pub async fn record<'e>(
    db: impl PgExecutor<'e>,
    key_id: Option<Uuid>,
    action: &str,
    target: &str,
    result: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO operator_audit (key_id, action, target, result) VALUES ($1, $2, $3, $4)
         RETURNING id",
        key_id,
        action,
        target,
        result,
    )
    .fetch_one(db)
    .await
}

/// One row by id.
pub async fn find<'e>(db: impl PgExecutor<'e>, id: i64) -> sqlx::Result<Option<AuditRow>> {
    sqlx::query_as!(
        AuditRow,
        "SELECT id, key_id, action, target, result, created_at
         FROM operator_audit WHERE id = $1",
        id,
    )
    .fetch_optional(db)
    .await
}

/// The newest `limit` rows, newest first.
pub async fn list<'e>(db: impl PgExecutor<'e>, limit: i64) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as!(
        AuditRow,
        "SELECT id, key_id, action, target, result, created_at
         FROM operator_audit ORDER BY id DESC LIMIT $1",
        limit,
    )
    .fetch_all(db)
    .await
}
