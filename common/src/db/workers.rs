//! The `workers` table: live workers prove it with a heartbeat.
//!
//! A claim held by a worker whose heartbeat is older than `WORKER_DEAD_AFTER`
//! is void (see `payments::claim_many`), so a dead worker's payments are claimed
//! again within seconds rather than after a lease.

use sqlx::PgExecutor;

/// Records that `worker_id` is alive now (registering it on first call).
pub async fn heartbeat<'e>(db: impl PgExecutor<'e>, worker_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO workers (id) VALUES ($1)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
        worker_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Removes the worker's row when it stops: any claim it still holds is void
/// at once, and the table does not grow with every restart.
pub async fn retire<'e>(db: impl PgExecutor<'e>, worker_id: &str) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM workers WHERE id = $1", worker_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets workers silent for a day (killed ones never retire themselves).
pub async fn forget_dead<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<u64> {
    let result = sqlx::query!("DELETE FROM workers WHERE heartbeat_at < now() - interval '1 day'")
        .execute(db)
        .await?;
    Ok(result.rows_affected())
}
