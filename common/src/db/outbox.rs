//! The transactional outbox: messages written with the payment, deleted once
//! the broker confirmed them.

use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use crate::queue::Job;

/// A message waiting to be published.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub payment_id: Uuid,
    pub message: Json<Job>,
}

/// Deletes rows the fast path published.
pub async fn delete<'e>(db: impl PgExecutor<'e>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(db)
        .await?;
    Ok(())
}

/// Locks up to `limit` due rows for this transaction. `SKIP LOCKED` lets
/// several relays (one per API process) share the table without waiting on
/// each other or publishing the same row at once.
pub async fn lock_due(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as(
        "SELECT id, payment_id, message FROM outbox
         WHERE available_at <= now()
         ORDER BY id
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

/// Rows not yet published (a gauge for operators).
pub async fn backlog<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(db)
        .await
}
