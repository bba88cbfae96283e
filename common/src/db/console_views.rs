//! Read models for operators (the operator API's overview and
//! needs-attention lists, shown by the console): payments by status,
//! throughput and latency per minute, live workers, and what is stuck.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Payments in one status.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StatusCount {
    pub status: String,
    pub count: i64,
}

pub async fn status_counts<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Vec<StatusCount>> {
    sqlx::query_as!(
        StatusCount,
        r#"SELECT status AS "status!", count(*) AS "count!"
           FROM payments GROUP BY status ORDER BY status"#,
    )
    .fetch_all(db)
    .await
}

/// One minute of the last hour: payments that reached a terminal status in
/// it, and their accept→terminal latency (median and 95th percentile, ms).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Minute {
    pub minute: DateTime<Utc>,
    pub finished: i64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

pub async fn last_hour<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Vec<Minute>> {
    sqlx::query_as!(
        Minute,
        r#"SELECT date_trunc('minute', finished_at) AS "minute!",
                  count(*) AS "finished!",
                  percentile_cont(0.5) WITHIN GROUP
                      (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at)::float8 * 1000) AS "p50_ms!",
                  percentile_cont(0.95) WITHIN GROUP
                      (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at)::float8 * 1000) AS "p95_ms!"
           FROM payments
           WHERE finished_at > now() - interval '1 hour'
           GROUP BY 1 ORDER BY 1"#,
    )
    .fetch_all(db)
    .await
}

/// A worker that has a row (alive, or dead less than a day).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerRow {
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
    /// Payments and operations it holds a claim on (`processing`).
    pub in_flight: i64,
}

pub async fn workers<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<Vec<WorkerRow>> {
    // `due_at IS NOT NULL` holds for every non-terminal row: the partial
    // index on it keeps these counts off the terminal rows.
    sqlx::query_as!(
        WorkerRow,
        r#"SELECT w.id, w.started_at,
                  EXTRACT(EPOCH FROM now() - w.heartbeat_at)::float8 AS "heartbeat_age_secs!",
                  (SELECT count(*) FROM payments p
                    WHERE p.due_at IS NOT NULL AND p.status = 'processing' AND p.claimed_by = w.id)
                  + (SELECT count(*) FROM operations o
                    WHERE o.due_at IS NOT NULL AND o.status = 'processing' AND o.claimed_by = w.id)
                      AS "in_flight!"
           FROM workers w ORDER BY w.started_at"#,
    )
    .fetch_all(db)
    .await
}

/// A payment that needs an operator's eye, and why.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StuckPayment {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub status: String,
    pub outcome_unknown_since: Option<DateTime<Utc>>,
    pub held_at: Option<DateTime<Utc>>,
    pub due_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub attempts: i32,
}

/// Non-terminal payments whose outcome is unknown, that are held for an
/// operator, or whose next step is overdue by more than `overdue_secs`;
/// oldest first, at most `limit`.
pub async fn stuck_payments<'e>(
    db: impl PgExecutor<'e>,
    overdue_secs: f64,
    limit: i64,
) -> sqlx::Result<Vec<StuckPayment>> {
    sqlx::query_as!(
        StuckPayment,
        "SELECT id, merchant_id, status, outcome_unknown_since, held_at, due_at, last_error, attempts
         FROM payments
         WHERE due_at IS NOT NULL
           AND (outcome_unknown_since IS NOT NULL OR held_at IS NOT NULL
                OR due_at < now() - make_interval(secs => $1))
         ORDER BY due_at LIMIT $2",
        overdue_secs,
        limit,
    )
    .fetch_all(db)
    .await
}

/// A webhook endpoint that is disabled, or failed deliveries in the last
/// hour.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FailingEndpoint {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub url: String,
    pub status: String,
    pub disabled_reason: Option<String>,
    /// Failed attempts in the last hour.
    pub failures: i64,
    /// Deliveries given up on (`dead`).
    pub dead_deliveries: i64,
    pub last_outcome: Option<String>,
}

pub async fn failing_endpoints<'e>(
    db: impl PgExecutor<'e>,
    limit: i64,
) -> sqlx::Result<Vec<FailingEndpoint>> {
    sqlx::query_as!(
        FailingEndpoint,
        r#"SELECT e.id, e.merchant_id, e.url, e.status, e.disabled_reason,
                  (SELECT count(*) FROM webhook_attempts a
                    WHERE a.endpoint_id = e.id AND a.outcome <> 'delivered'
                      AND a.created_at > now() - interval '1 hour') AS "failures!",
                  (SELECT count(*) FROM webhook_deliveries d
                    WHERE d.endpoint_id = e.id AND d.status = 'dead') AS "dead_deliveries!",
                  (SELECT a.outcome FROM webhook_attempts a
                    WHERE a.endpoint_id = e.id ORDER BY a.id DESC LIMIT 1) AS last_outcome
           FROM webhook_endpoints e
           WHERE e.status = 'disabled'
              OR EXISTS (SELECT 1 FROM webhook_attempts a
                          WHERE a.endpoint_id = e.id AND a.outcome <> 'delivered'
                            AND a.created_at > now() - interval '1 hour')
              OR EXISTS (SELECT 1 FROM webhook_deliveries d
                          WHERE d.endpoint_id = e.id AND d.status = 'dead')
           ORDER BY e.created_at LIMIT $1"#,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Payments of any merchant with this order id (newest first, at most 50).
pub async fn payments_by_order_id<'e>(
    db: impl PgExecutor<'e>,
    order_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM payments WHERE order_id = $1 ORDER BY created_at DESC LIMIT $2",
        order_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// One event of a payment, with its deliveries' attempts.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EventAttempt {
    pub event_id: Uuid,
    pub event_type: String,
    pub event_at: DateTime<Utc>,
    pub endpoint_url: Option<String>,
    pub delivery_status: Option<String>,
    pub attempt: Option<i32>,
    pub outcome: Option<String>,
    pub status_code: Option<i32>,
    pub attempted_at: Option<DateTime<Utc>>,
}

/// A payment's events (and its operations'), each with every delivery
/// attempt (an event without deliveries appears once, with no attempt).
pub async fn payment_events<'e>(
    db: impl PgExecutor<'e>,
    payment_id: Uuid,
) -> sqlx::Result<Vec<EventAttempt>> {
    sqlx::query_as!(
        EventAttempt,
        r#"SELECT ev.id AS event_id, ev.type AS event_type, ev.created_at AS event_at,
                  e.url AS "endpoint_url?", d.status AS "delivery_status?",
                  a.attempt AS "attempt?", a.outcome AS "outcome?", a.status_code AS "status_code?",
                  a.created_at AS "attempted_at?"
           FROM events ev
           LEFT JOIN webhook_deliveries d ON d.event_id = ev.id
           LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id
           LEFT JOIN webhook_attempts a ON a.delivery_id = d.id
           WHERE ev.payment_id = $1
           ORDER BY ev.seq, d.id, a.id
           LIMIT 500"#,
        payment_id,
    )
    .fetch_all(db)
    .await
}
