//! The transactional outbox: messages written with the payment, deleted once
//! the broker confirmed them.

use std::time::Duration;

use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use crate::queue::Job;

/// A message waiting to be published.
#[derive(Debug)]
pub struct OutboxRow {
    pub id: i64,
    pub payment_id: Uuid,
    pub message: Json<Job>,
}

/// Writes `job` for `payment_id`, due for the relay after `relay_after`
/// (until then the fast path is expected to publish it). Called in the
/// transaction that writes what the job is about.
pub async fn insert<'e>(
    db: impl PgExecutor<'e>,
    payment_id: Uuid,
    job: &Job,
    relay_after: Duration,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        "INSERT INTO outbox (payment_id, message, available_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))
         RETURNING id",
        payment_id,
        Json(job) as _,
        relay_after.as_secs_f64(),
    )
    .fetch_one(db)
    .await
}

/// Deletes rows the fast path published.
pub async fn delete<'e>(db: impl PgExecutor<'e>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", ids)
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
    sqlx::query_as!(
        OutboxRow,
        r#"SELECT id, payment_id, message AS "message: Json<Job>" FROM outbox
           WHERE available_at <= now()
           ORDER BY id
           LIMIT $1
           FOR UPDATE SKIP LOCKED"#,
        limit,
    )
    .fetch_all(&mut **tx)
    .await
}

/// Rows not yet published (a gauge for operators).
pub async fn backlog<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox"#)
        .fetch_one(db)
        .await
}
