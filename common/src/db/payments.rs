//! The `payments` table and its status history.
//!
//! Every status change is one guarded statement: the row is locked, the
//! expected status checked (`WHERE status = ...`), the row updated and the
//! history row written, all at once. A caller whose guard fails gets `None`
//! and must not act: the database decides, never the message. Each
//! transition is one function here. Those that operations have too (claim,
//! retry, hold, the give-ups before a claim, the rescuer's scan) call the
//! statement written once in [`super::lifecycle`] over this table; the
//! others are written out in full below. All are checked against the schema
//! when the crate builds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use super::lifecycle::{Audit, Origin, Retry};
use super::outbox;
use crate::domain::{Amount, CardToken, Currency, PaymentId, PaymentStatus};
use crate::processor::{CardDetails, ProcessorResponse};
use crate::queue::Job;

/// A payment as stored. Wire and domain forms are built from it explicitly
/// (see the API's `payments` module), so a schema change never reaches the API
/// by accident. It also reads back from an event's snapshot (the row as
/// `to_jsonb` wrote it, without the card token).
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct PaymentRow {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub status: PaymentStatus,
    pub amount: i64,
    pub currency: Currency,
    pub capture: bool,
    pub captured: bool,
    /// Redacting in `Debug`: a row printed anywhere never shows the token.
    #[serde(skip, default = "CardToken::withheld")]
    pub card_token: CardToken,
    pub order_id: Option<String>,
    pub invoice_id: Option<String>,
    pub customer_id: Option<String>,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub description: Option<String>,
    pub statement_descriptor: Option<String>,
    pub billing_address: Option<Json<Value>>,
    pub metadata: Json<Value>,
    pub receipt_number: i64,
    pub card: Option<Json<CardDetails>>,
    pub processor_response: Option<Json<ProcessorResponse>>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub attempts: i32,
    pub replayed_attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub due_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Since when the outcome of the latest processor call is unknown; see
    /// the migration `truth_about_money` and the worker's `step` module.
    pub outcome_unknown_since: Option<DateTime<Utc>>,
    /// Since when the job waits for an operator (the processor refused our
    /// request itself); the payment stays `pending`.
    pub held_at: Option<DateTime<Utc>>,
    /// The worker holding (or that last held) the claim.
    pub claimed_by: Option<String>,
    pub amount_capturable: i64,
    pub amount_captured: i64,
    pub captured_at: Option<DateTime<Utc>>,
    pub capture_details: Option<Json<Value>>,
    /// Refunds that are not `failed`, reserved when each was created.
    pub amount_refunded: i64,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancellation_reason: Option<String>,
    /// The latest capture, void or refund of this payment that ended
    /// `failed`: `{"type", "failure_code", "failure_message", "failed_at"}`
    /// (written by [`super::operations::fail`]).
    pub last_operation_error: Option<Json<Value>>,
}

impl PaymentRow {
    pub fn payment_id(&self) -> PaymentId {
        PaymentId(self.id)
    }

    /// Attempts made since the payment was accepted or last replayed: what
    /// `MAX_ATTEMPTS` bounds.
    pub fn attempts_this_round(&self) -> i32 {
        self.attempts - self.replayed_attempts
    }
}

/// A validated payment to insert.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub id: PaymentId,
    pub merchant_id: Uuid,
    pub amount: Amount,
    pub currency: Currency,
    pub capture: bool,
    pub card_token: CardToken,
    pub order_id: Option<String>,
    pub invoice_id: Option<String>,
    pub customer_id: Option<String>,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    pub description: Option<String>,
    pub statement_descriptor: Option<String>,
    pub billing_address: Option<Value>,
    pub metadata: Value,
    /// A client waits for the outcome (`Prefer: wait`): notify when it is
    /// terminal. Off otherwise, because notifications serialise commits.
    pub notify_on_finish: bool,
    pub origin: Origin,
}

/// A payment just written, and the outbox row of its job.
#[derive(Debug)]
pub struct Inserted {
    pub payment: PaymentRow,
    pub outbox_id: i64,
}

/// Writes the payment (`pending`) with its first history row, and its job's
/// outbox row ([`outbox::insert`]), in the caller's transaction, so they
/// exist together or not at all. Until the caller commits, nothing is
/// written; only a failed commit leaves the outcome unknown. The outbox row
/// becomes due for the relay after `relay_after`: until then the fast path
/// is expected to publish it.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewPayment,
    relay_after: Duration,
) -> sqlx::Result<Inserted> {
    let payment = payment_row!(
        [
            "WITH p AS (
                 INSERT INTO payments (id, merchant_id, status, amount, currency, capture,
                     card_token, order_id, invoice_id, customer_id, customer_email, customer_name,
                     description, statement_descriptor, billing_address, metadata,
                     notify_on_finish, due_at, receipt_number)
                 VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                     $15, $16, now(), nextval(receipt_sequence($2)))
                 RETURNING *
             ), h AS (
                 INSERT INTO payment_status_history (payment_id, from_status, to_status, actor,
                     reason, request_id, idempotency_key)
                 SELECT id, NULL, 'pending', 'api', 'accepted', $17, $18 FROM p
             ) " +
        ],
        "FROM p",
        new.id.0,
        new.merchant_id,
        new.amount.get(),
        new.currency.as_str(),
        new.capture,
        new.card_token.expose(),
        new.order_id.as_deref(),
        new.invoice_id.as_deref(),
        new.customer_id.as_deref(),
        new.customer_email.as_deref(),
        new.customer_name.as_deref(),
        new.description.as_deref(),
        new.statement_descriptor.as_deref(),
        new.billing_address.as_ref(),
        &new.metadata,
        new.notify_on_finish,
        new.origin.request_id.as_deref(),
        new.origin.idempotency_key.as_deref(),
    )
    .fetch_one(&mut **tx)
    .await?;
    let job = Job::process_payment(new.id, new.merchant_id);
    let outbox_id = outbox::insert(&mut **tx, payment.id, &job, relay_after).await?;
    Ok(Inserted { payment, outbox_id })
}

/// The payment if it belongs to this merchant.
pub async fn find_for_merchant<'e>(
    db: impl PgExecutor<'e>,
    merchant_id: Uuid,
    id: PaymentId,
) -> sqlx::Result<Option<PaymentRow>> {
    payment_row!(
        [],
        "FROM payments WHERE id = $1 AND merchant_id = $2",
        id.0,
        merchant_id
    )
    .fetch_optional(db)
    .await
}

/// The payment, whoever owns it (workers and operators).
pub async fn find<'e>(db: impl PgExecutor<'e>, id: PaymentId) -> sqlx::Result<Option<PaymentRow>> {
    payment_row!([], "FROM payments WHERE id = $1", id.0)
        .fetch_optional(db)
        .await
}

/// `pending` (not held), or `processing` under a void claim, → `processing`
/// under a new claim by `audit.actor` for `lease`, for each of `ids` at once
/// (one statement, one commit: a worker claims the payments of the messages
/// it holds together). Taking over a void claim marks the outcome unknown:
/// the dead worker may have sent the call, so the next step asks the
/// processor before doing anything. Returns the payments claimed; one that
/// is missing is held by a live worker, held for an operator, terminal or
/// unknown. The rows are locked in id order, so two claims of overlapping
/// sets wait for each other instead of deadlocking.
pub async fn claim_many<'e>(
    db: impl PgExecutor<'e>,
    ids: &[PaymentId],
    lease: Duration,
    dead_after: Duration,
    audit: Audit<'_>,
) -> sqlx::Result<Vec<PaymentRow>> {
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    claim!(payment_row, "payments", "payment_status_history", "payment_id",
        ids: &ids, lease: lease, dead_after: dead_after, audit: audit)
    .fetch_all(db)
    .await
}

/// One approved charge to record ([`succeed_many`]).
#[derive(Debug, Clone)]
pub struct Approval {
    pub id: PaymentId,
    /// The claim's attempt: the fencing token.
    pub attempt: i32,
    pub captured: bool,
    pub card: CardDetails,
    pub processor_response: ProcessorResponse,
    /// For the history row.
    pub reason: &'static str,
}

/// `processing` → `succeeded` for each approval, under its own claim (the
/// attempt it was claimed with: a worker whose lease expired and whose
/// payment was claimed again cannot overwrite the newer claim's result), in
/// one statement and one commit, each with its history row. Returns the
/// payments recorded; one that is missing lost its claim, and its result
/// stands as the newer claim records it. `approvals` name each payment once.
pub async fn succeed_many<'e>(
    db: impl PgExecutor<'e>,
    approvals: &[Approval],
    actor: &str,
) -> sqlx::Result<Vec<PaymentRow>> {
    let ids: Vec<Uuid> = approvals.iter().map(|a| a.id.0).collect();
    let attempts: Vec<i32> = approvals.iter().map(|a| a.attempt).collect();
    let captured: Vec<bool> = approvals.iter().map(|a| a.captured).collect();
    let to_json =
        |value: serde_json::Result<Value>| value.map_err(|err| sqlx::Error::Encode(err.into()));
    let cards = approvals
        .iter()
        .map(|a| to_json(serde_json::to_value(&a.card)))
        .collect::<sqlx::Result<Vec<Value>>>()?;
    let responses = approvals
        .iter()
        .map(|a| to_json(serde_json::to_value(&a.processor_response)))
        .collect::<sqlx::Result<Vec<Value>>>()?;
    let reasons: Vec<&str> = approvals.iter().map(|a| a.reason).collect();
    payment_row!(
        [
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::int4[], $3::bool[], $4::jsonb[],
                     $5::jsonb[], $6::text[])
                     AS i(id, attempt, captured, card, processor_response, reason)
             ), old AS (
                 SELECT p.id, p.status
                 FROM (SELECT id FROM input ORDER BY id) wanted
                 CROSS JOIN LATERAL (
                     SELECT id, status FROM payments WHERE id = wanted.id FOR UPDATE
                 ) p
             ), updated AS (
                 UPDATE payments p SET status = 'succeeded', captured = i.captured,
                     card = i.card, processor_response = i.processor_response,
                     amount_captured = CASE WHEN i.captured THEN p.amount ELSE 0 END,
                     amount_capturable = CASE WHEN i.captured THEN 0 ELSE p.amount END,
                     captured_at = CASE WHEN i.captured THEN now() END,
                     last_error = NULL, next_attempt_at = NULL, lease_expires_at = NULL,
                     due_at = NULL, outcome_unknown_since = NULL, finished_at = now(),
                     updated_at = now()
                 FROM old JOIN input i ON i.id = old.id
                 WHERE p.id = old.id AND old.status = 'processing' AND p.attempts = i.attempt
                 RETURNING p.*, old.status AS from_status, i.reason AS audit_reason
             ), history AS (
                 INSERT INTO payment_status_history (payment_id, from_status, to_status, actor,
                     reason)
                 SELECT id, from_status, status, $7, audit_reason FROM updated
             ) " +
        ],
        "FROM updated",
        &ids,
        &attempts,
        &captured,
        &cards,
        &responses,
        &reasons as &[&str],
        actor,
    )
    .fetch_all(db)
    .await
}

/// Why a claimed payment failed, and what the processor said if it
/// answered (a decline): `failure_code` and `failure_message` on the row.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub code: &'a str,
    pub message: &'a str,
    pub card: Option<&'a CardDetails>,
    pub processor_response: Option<&'a ProcessorResponse>,
}

/// `processing` → `failed`: the processor declined (terminal, not retried)
/// or the job was given up (`failure.code` says which).
pub async fn fail<'e>(
    db: impl PgExecutor<'e>,
    id: PaymentId,
    attempt: i32,
    failure: &Failure<'_>,
    audit: Audit<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    payment_row!(
        [
            "WITH old AS (SELECT id, status FROM payments WHERE id = $1 FOR UPDATE),
             updated AS (
                 UPDATE payments p SET status = 'failed', card = COALESCE($5, p.card),
                     processor_response = COALESCE($6, p.processor_response),
                     failure_code = $7, failure_message = $8, outcome_unknown_since = NULL,
                     next_attempt_at = NULL, lease_expires_at = NULL, due_at = NULL,
                     finished_at = now(), updated_at = now()
                 FROM old
                 WHERE p.id = old.id AND old.status = 'processing' AND p.attempts = $4
                 RETURNING p.*, old.status AS from_status
             ), history AS (
                 INSERT INTO payment_status_history (payment_id, from_status, to_status, actor,
                     reason)
                 SELECT id, from_status, status, $2, $3 FROM updated
             ) " +
        ],
        "FROM updated",
        id.0,                                      // $1
        audit.actor,                               // $2
        audit.reason,                              // $3
        attempt,                                   // $4
        failure.card.map(Json) as _,               // $5
        failure.processor_response.map(Json) as _, // $6
        failure.code,                              // $7
        failure.message,                           // $8
    )
    .fetch_optional(db)
    .await
}

/// `pending` → `failed` for a job given up before any claim (a message that
/// kept killing workers). Only a payment known never to have reached the
/// processor: not while an outcome is unknown (see [`hold_unclaimed`]).
pub async fn fail_unclaimed<'e>(
    db: impl PgExecutor<'e>,
    id: PaymentId,
    failure_code: &str,
    failure_message: &str,
    audit: Audit<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    fail_unclaimed!(payment_row, "payments", "payment_status_history", "payment_id",
        id: id.0, code: failure_code, message: failure_message, audit: audit)
    .fetch_optional(db)
    .await
}

/// `pending` → `cancelled` for a payment no worker has claimed and whose
/// outcome is known (never sent, or known not processed): it is never
/// charged, and its queued job finds nothing to do.
pub async fn cancel_unprocessed<'e>(
    db: impl PgExecutor<'e>,
    id: PaymentId,
    reason: &str,
    origin: &Origin,
    audit: Audit<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    // The request behind the change is in the history row: its
    // `payment.cancelled` event names it.
    payment_row!(
        [
            "WITH old AS (SELECT id, status FROM payments WHERE id = $1 FOR UPDATE),
             updated AS (
                 UPDATE payments p SET status = 'cancelled', cancelled_at = now(),
                     cancellation_reason = $4, held_at = NULL, next_attempt_at = NULL,
                     lease_expires_at = NULL, due_at = NULL, finished_at = now(),
                     updated_at = now()
                 FROM old
                 WHERE p.id = old.id AND old.status = 'pending'
                   AND p.outcome_unknown_since IS NULL
                 RETURNING p.*, old.status AS from_status
             ), history AS (
                 INSERT INTO payment_status_history (payment_id, from_status, to_status, actor,
                     reason, request_id, idempotency_key)
                 SELECT id, from_status, status, $2, $3, $5, $6 FROM updated
             ) " +
        ],
        "FROM updated",
        id.0,                              // $1
        audit.actor,                       // $2
        audit.reason,                      // $3
        reason,                            // $4
        origin.request_id.as_deref(),      // $5
        origin.idempotency_key.as_deref(), // $6
    )
    .fetch_optional(db)
    .await
}

/// `processing` (this worker's claim) → `pending`, held for an operator:
/// the processor refused the request itself, so no retry can help until the
/// configuration is fixed. Nothing is said about the card that is not known:
/// an unknown outcome stays marked, and the replay asks the processor first.
pub async fn hold<'e>(
    db: impl PgExecutor<'e>,
    id: PaymentId,
    attempt: i32,
    last_error: &str,
    audit: Audit<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    hold!(payment_row, "payments", "payment_status_history", "payment_id",
        id: id.0, attempt: attempt, last_error: last_error, audit: audit)
    .fetch_optional(db)
    .await
}

/// A job given up before any claim whose payment may have reached the
/// processor (its outcome is unknown, or a dead worker's claim is void):
/// held like [`hold`] instead of failed, its outcome marked unknown.
pub async fn hold_unclaimed<'e>(
    db: impl PgExecutor<'e>,
    id: PaymentId,
    last_error: &str,
    dead_after: Duration,
    audit: Audit<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    hold_unclaimed!(payment_row, "payments", "payment_status_history", "payment_id",
        id: id.0, last_error: last_error, dead_after: dead_after, audit: audit)
    .fetch_optional(db)
    .await
}

/// `processing` → `pending` after a transient error, to be retried as
/// `retry` says.
pub async fn schedule_retry<'e>(
    db: impl PgExecutor<'e>,
    id: PaymentId,
    attempt: i32,
    retry: &Retry<'_>,
    audit: Audit<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    schedule_retry!(payment_row, "payments", "payment_status_history", "payment_id",
        id: id.0, attempt: attempt, retry: retry, audit: audit)
    .fetch_optional(db)
    .await
}

/// `failed` (dead-lettered, one of `codes`) or held → `pending`: an operator
/// replays it. The attempt budget starts afresh; `attempts` itself is never
/// reset, and an unknown outcome stays marked (the next step asks first).
pub async fn replay<'e>(
    db: impl PgExecutor<'e>,
    id: PaymentId,
    codes: &[&str],
    audit: Audit<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    replay!(payment_row, "payments", "payment_status_history", "payment_id",
        id: id.0, codes: codes, audit: audit)
    .fetch_optional(db)
    .await
}

/// Records an event that changes no status (an operator purging a dead
/// letter, say) in the history of each payment.
pub async fn record_event<'e>(
    db: impl PgExecutor<'e>,
    ids: &[Uuid],
    audit: Audit<'_>,
) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        "INSERT INTO payment_status_history (payment_id, from_status, to_status, actor, reason)
         SELECT id, status, status, $2, $3 FROM payments WHERE id = ANY($1)",
        ids,          // $1
        audit.actor,  // $2
        audit.reason, // $3
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// A payment the rescuer re-enqueues.
#[derive(Debug)]
pub struct Overdue {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub status: PaymentStatus,
}

/// Takes up to `limit` payments whose message is late by more than `grace`
/// and marks them due again in `grace`, so each is re-enqueued at most once
/// per grace period:
/// - `processing` under a void claim (its worker died or its lease ended:
///   the SQL function `claim_is_void`, which the claim's guard uses too) whose message the broker did not bring back;
/// - `pending` with a retry whose tier (the jitter's upper bound) passed;
/// - `pending` waiting for its first (or replayed) delivery, only when
///   `backlog` is false: while the queue holds ready messages, a payment
///   waiting its turn is not late.
///
/// Held payments (`due_at` NULL) wait for an operator and are never taken.
/// Operations have the same statement over their table
/// ([`super::operations::take_overdue`]).
pub async fn take_overdue<'e>(
    db: impl PgExecutor<'e>,
    grace: Duration,
    dead_after: Duration,
    backlog: bool,
    limit: i64,
) -> sqlx::Result<Vec<Overdue>> {
    take_overdue!(Overdue, "payments", r#"id, merchant_id, status AS "status: PaymentStatus""#,
        grace: grace, dead_after: dead_after, backlog: backlog, limit: limit)
    .fetch_all(db)
    .await
}

/// Payments whose outcome is unknown, and the age of the oldest, in seconds.
pub async fn unknown_outcomes<'e>(db: impl PgExecutor<'e>) -> sqlx::Result<(i64, f64)> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "count!",
                  COALESCE(EXTRACT(EPOCH FROM now() - min(outcome_unknown_since))::float8, 0)
                      AS "oldest!"
           FROM payments
           WHERE outcome_unknown_since IS NOT NULL AND status IN ('pending', 'processing')"#,
    )
    .fetch_one(db)
    .await?;
    Ok((row.count, row.oldest))
}

/// One status change.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn history<'e>(db: impl PgExecutor<'e>, id: PaymentId) -> sqlx::Result<Vec<HistoryRow>> {
    sqlx::query_as!(
        HistoryRow,
        "SELECT from_status, to_status, actor, reason, created_at
         FROM payment_status_history WHERE payment_id = $1 ORDER BY id",
        id.0,
    )
    .fetch_all(db)
    .await
}
