//! The `operations` table: captures, voids and refunds of a payment, each a
//! processor operation worked through the queue like a charge.
//!
//! Creating one is a single guarded statement that checks the payment's
//! state, changes its money (a refund reserves its amount) and writes the
//! operation, its history and its outbox row together, so concurrent
//! requests can never capture twice or refund more than was captured. Its
//! outcome is recorded by one statement that also applies the effect on the
//! payment (captured, cancelled, refund released). Transitions have the
//! shape of [`super::payments`]' ones: guarded, with history, fenced by the
//! attempt counter. Those a payment has too (claim, retry, hold, the
//! give-ups before a claim, the rescuer's scan) call the statement written
//! once in [`super::lifecycle`] over this table; the others (success, the
//! processor's failure, replay) are written out in full below, each with
//! its effect on the payment.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

use super::lifecycle::{Audit, Origin, Retry};
use super::outbox;
use crate::domain::{Currency, Kind, OperationId, OperationStatus, PaymentId};
use crate::queue::Job;

/// An operation as stored (also read back from an event's snapshot).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct OperationRow {
    pub id: OperationId,
    pub payment_id: Uuid,
    pub merchant_id: Uuid,
    pub kind: Kind,
    pub status: OperationStatus,
    pub amount: i64,
    pub currency: Currency,
    pub requested_by: String,
    pub reason: Option<String>,
    pub notes: Option<String>,
    pub statement_descriptor: Option<String>,
    pub metadata: Json<Value>,
    pub processor_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub attempts: i32,
    pub replayed_attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub due_at: Option<DateTime<Utc>>,
    pub outcome_unknown_since: Option<DateTime<Utc>>,
    pub held_at: Option<DateTime<Utc>>,
    pub claimed_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl OperationRow {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn attempts_this_round(&self) -> i32 {
        self.attempts - self.replayed_attempts
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status,
            OperationStatus::Succeeded | OperationStatus::Failed
        )
    }
}

/// A new operation as a merchant (or the system) asks for it.
#[derive(Debug, Clone)]
pub struct NewOperation {
    pub id: OperationId,
    pub payment_id: PaymentId,
    pub merchant_id: Uuid,
    pub kind: Kind,
    /// `None`: all that is capturable, voidable or still refundable.
    pub amount: Option<i64>,
    pub requested_by: String,
    pub reason: Option<String>,
    pub notes: Option<String>,
    pub statement_descriptor: Option<String>,
    pub metadata: Value,
    pub origin: Origin,
}

/// An operation just written, and the outbox row of its job.
#[derive(Debug)]
pub struct Created {
    pub operation: OperationRow,
    pub outbox_id: i64,
}

/// The statement that creates an operation: `guard` reads the locked
/// payment `old` (`$3` is the requested amount or NULL) and defines `amt`,
/// the amount the guard allowed (no row: not allowed), and `pay`, its
/// change to the payment's money.
macro_rules! create_operation {
    ($guard:literal, $new:expr) => {
        operation_row!(
            [
                "WITH old AS (SELECT *, $3::bigint AS requested FROM payments
                              WHERE id = $1 AND merchant_id = $2 FOR UPDATE), "
                + $guard + ",
                 o AS (
                     INSERT INTO operations (id, payment_id, merchant_id, kind, status, amount,
                         currency, requested_by, reason, notes, statement_descriptor, metadata,
                         due_at)
                     SELECT $4, old.id, old.merchant_id, $5, 'pending', amt.amount, old.currency,
                         $6, $7, $8, $9, $10, now()
                     FROM old, amt, pay
                     RETURNING *
                 ), h AS (
                     INSERT INTO operation_status_history (operation_id, from_status, to_status,
                         actor, reason, request_id, idempotency_key)
                     SELECT id, NULL, 'pending', requested_by, 'requested', $11, $12 FROM o
                 ) " +
            ],
            "FROM o",
            $new.payment_id.0,
            $new.merchant_id,
            $new.amount,
            $new.id.0,
            $new.kind as _,
            &$new.requested_by,
            $new.reason.as_deref(),
            $new.notes.as_deref(),
            $new.statement_descriptor.as_deref(),
            &$new.metadata,
            $new.origin.request_id.as_deref(),
            $new.origin.idempotency_key.as_deref(),
        )
    };
}

/// Creates the operation if the payment (of this merchant) allows it now,
/// with its history, and its job's outbox row ([`outbox::insert`]), in the
/// caller's transaction (as [`super::payments::insert`]). `None`: the
/// payment does not allow it (the caller reads the payment to say why). A
/// second open capture or void violates `operations_one_open_capture_or_void`.
pub async fn create(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewOperation,
    relay_after: Duration,
) -> sqlx::Result<Option<Created>> {
    let operation = match new.kind {
        // Only an authorized, uncaptured payment; at most what it allows.
        Kind::Capture => {
            create_operation!(
                "amt AS (SELECT COALESCE($3, amount_capturable) AS amount FROM old
                     WHERE status = 'succeeded' AND NOT captured AND amount_capturable > 0
                       AND COALESCE($3, amount_capturable) BETWEEN 1 AND amount_capturable),
             pay AS (UPDATE payments p SET updated_at = now() FROM amt WHERE p.id = $1
                     RETURNING p.id)",
                new
            )
            .fetch_optional(&mut **tx)
            .await?
        }
        Kind::Void => {
            create_operation!(
                "amt AS (SELECT amount_capturable AS amount FROM old
                     WHERE status = 'succeeded' AND NOT captured AND amount_capturable > 0),
             pay AS (UPDATE payments p SET updated_at = now() FROM amt WHERE p.id = $1
                     RETURNING p.id)",
                new
            )
            .fetch_optional(&mut **tx)
            .await?
        }
        // Reserve the refund's amount in the same statement: the check
        // `payments_refunds_within_capture` and this guard make an
        // over-refund impossible however many requests race.
        Kind::Refund => {
            create_operation!(
                "amt AS (SELECT COALESCE($3, amount_captured - amount_refunded) AS amount FROM old
                     WHERE status = 'succeeded' AND captured
                       AND COALESCE($3, amount_captured - amount_refunded) BETWEEN 1
                           AND amount_captured - amount_refunded),
             pay AS (UPDATE payments p SET amount_refunded = p.amount_refunded + amt.amount,
                         updated_at = now()
                     FROM amt WHERE p.id = $1 RETURNING p.id)",
                new
            )
            .fetch_optional(&mut **tx)
            .await?
        }
    };
    let Some(operation) = operation else {
        return Ok(None);
    };
    let job = Job::operation(new.id, new.payment_id, new.merchant_id);
    let outbox_id = outbox::insert(&mut **tx, new.payment_id.0, &job, relay_after).await?;
    Ok(Some(Created {
        operation,
        outbox_id,
    }))
}

pub async fn find<'e>(
    db: impl PgExecutor<'e>,
    id: OperationId,
) -> sqlx::Result<Option<OperationRow>> {
    operation_row!([], "FROM operations WHERE id = $1", id.0)
        .fetch_optional(db)
        .await
}

pub async fn find_for_merchant<'e>(
    db: impl PgExecutor<'e>,
    merchant_id: Uuid,
    id: OperationId,
    kind: Kind,
) -> sqlx::Result<Option<OperationRow>> {
    operation_row!(
        [],
        "FROM operations WHERE id = $1 AND merchant_id = $2 AND kind = $3",
        id.0,
        merchant_id,
        kind.as_str(),
    )
    .fetch_optional(db)
    .await
}

/// The payment's operations of `kind`, newest first, at most `limit`,
/// after the cursor `starting_after` (an operation id of this payment).
pub async fn list_for_payment<'e>(
    db: impl PgExecutor<'e>,
    payment_id: PaymentId,
    kind: Kind,
    starting_after: Option<OperationId>,
    limit: i64,
) -> sqlx::Result<Vec<OperationRow>> {
    operation_row!(
        [],
        "FROM operations o
         WHERE payment_id = $1 AND kind = $2
           AND ($3::uuid IS NULL OR (created_at, id) < (
                SELECT created_at, id FROM operations WHERE id = $3 AND payment_id = $1))
         ORDER BY created_at DESC, id DESC
         LIMIT $4",
        payment_id.0,
        kind.as_str(),
        starting_after.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// The latest `per_payment` refunds of each of `payment_ids`, newest first:
/// one query for a whole page of payments.
pub async fn latest_refunds<'e>(
    db: impl PgExecutor<'e>,
    payment_ids: &[Uuid],
    per_payment: i64,
) -> sqlx::Result<Vec<OperationRow>> {
    operation_row!(
        [],
        "FROM (
             SELECT o.*, row_number() OVER (
                 PARTITION BY payment_id ORDER BY created_at DESC, id DESC) AS n
             FROM operations o
             WHERE payment_id = ANY($1) AND kind = 'refund'
         ) ranked
         WHERE n <= $2
         ORDER BY payment_id, created_at DESC, id DESC",
        payment_ids,
        per_payment,
    )
    .fetch_all(db)
    .await
}

/// `pending` (not held), or `processing` under a void claim, → `processing`
/// under a new claim: the statement of [`super::payments::claim_many`], for
/// one operation.
pub async fn claim<'e>(
    db: impl PgExecutor<'e>,
    id: OperationId,
    lease: Duration,
    dead_after: Duration,
    audit: Audit<'_>,
) -> sqlx::Result<Option<OperationRow>> {
    claim!(operation_row, "operations", "operation_status_history", "operation_id",
        ids: &[id.0], lease: lease, dead_after: dead_after, audit: audit)
    .fetch_optional(db)
    .await
}

/// `processing` → `succeeded` under this claim, with its effect on the
/// payment in the same statement: `also` adds CTEs that read `updated`.
macro_rules! succeed_with {
    ($db:expr, $op:expr, $processor_id:expr, $audit:expr, also: $also:literal) => {
        operation_row!(
            [
                "WITH old AS (SELECT id, status FROM operations WHERE id = $1 FOR UPDATE),
                 updated AS (
                     UPDATE operations p SET status = 'succeeded', processor_id = $5,
                         last_error = NULL, next_attempt_at = NULL, lease_expires_at = NULL,
                         due_at = NULL, outcome_unknown_since = NULL, finished_at = now(),
                         updated_at = now()
                     FROM old
                     WHERE p.id = old.id AND old.status = 'processing' AND p.attempts = $4
                     RETURNING p.*, old.status AS from_status
                 ), history AS (
                     INSERT INTO operation_status_history (operation_id, from_status, to_status,
                         actor, reason)
                     SELECT id, from_status, status, $2, $3 FROM updated
                 )" + $also + " " +
            ],
            "FROM updated",
            $op.id.0,      // $1
            $audit.actor,  // $2
            $audit.reason, // $3
            $op.attempts,  // $4
            $processor_id, // $5
        )
        .fetch_optional($db)
        .await
    };
}

/// `processing` → `succeeded` under this claim, applying the effect on the
/// payment (captured, cancelled) in the same statement. A capture also
/// applies what it was sent with: its `statement_descriptor` replaces the
/// payment's, its `metadata` keys are merged into the payment's (Stripe's
/// rule for a capture's parameters).
pub async fn succeed<'e>(
    db: impl PgExecutor<'e>,
    op: &OperationRow,
    processor_id: &str,
    audit: Audit<'_>,
) -> sqlx::Result<Option<OperationRow>> {
    match op.kind {
        Kind::Capture => succeed_with!(db, op, processor_id, audit, also: ", pay AS (
                 UPDATE payments SET captured = true, amount_captured = u.amount,
                     amount_capturable = 0, captured_at = now(),
                     statement_descriptor = COALESCE(u.statement_descriptor,
                                                     payments.statement_descriptor),
                     metadata = payments.metadata || u.metadata,
                     capture_details = jsonb_build_object(
                         'captured_amount', u.amount,
                         'capture_time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                         'processor_capture_id', u.processor_id),
                     updated_at = now()
                 FROM updated u WHERE payments.id = u.payment_id
                 RETURNING payments.id, payments.status
             ), pay_history AS (
                 INSERT INTO payment_status_history (payment_id, from_status, to_status, actor, reason)
                 SELECT id, status, status, $2, 'captured' FROM pay
             )"),
        Kind::Void => succeed_with!(db, op, processor_id, audit, also: ", pay AS (
                 UPDATE payments SET status = 'cancelled', amount_capturable = 0,
                     cancelled_at = now(),
                     cancellation_reason = COALESCE(u.reason, 'requested_by_customer'),
                     updated_at = now()
                 FROM updated u WHERE payments.id = u.payment_id AND payments.status = 'succeeded'
                 RETURNING payments.id
             ), pay_history AS (
                 INSERT INTO payment_status_history (payment_id, from_status, to_status, actor, reason)
                 SELECT id, 'succeeded', 'cancelled', $2, 'authorization voided' FROM pay
             )"),
        Kind::Refund => succeed_with!(db, op, processor_id, audit, also: ""),
    }
}

/// `processing` → `failed` under this claim, on the processor's definitive
/// answer, with its effect on the payment in the same statement: a failed
/// refund releases its reserved amount; every failure is the payment's
/// `last_operation_error` (and an event, by trigger). `released`: the
/// processor said it no longer holds the authorization (a capture or void
/// refused as `charge_not_capturable` or `charge_not_voidable`), so the
/// payment, authorized and uncaptured, becomes `cancelled` (for the void's
/// reason; `automatic` after a capture) with nothing capturable: nothing
/// can be taken from it any more, and the rescuer has nothing left to void.
pub async fn fail<'e>(
    db: impl PgExecutor<'e>,
    op: &OperationRow,
    failure_code: &str,
    failure_message: &str,
    released: bool,
    audit: Audit<'_>,
) -> sqlx::Result<Option<OperationRow>> {
    operation_row!(
        [
            "WITH old AS (SELECT id, status FROM operations WHERE id = $1 FOR UPDATE),
             updated AS (
                 UPDATE operations p SET status = 'failed', failure_code = $5,
                     failure_message = $6, outcome_unknown_since = NULL, next_attempt_at = NULL,
                     lease_expires_at = NULL, due_at = NULL, finished_at = now(),
                     updated_at = now()
                 FROM old
                 WHERE p.id = old.id AND old.status = 'processing' AND p.attempts = $4
                 RETURNING p.*, old.status AS from_status
             ), history AS (
                 INSERT INTO operation_status_history (operation_id, from_status, to_status,
                     actor, reason)
                 SELECT id, from_status, status, $2, $3 FROM updated
             ), gone AS (
                 SELECT u.payment_id FROM updated u JOIN payments p ON p.id = u.payment_id
                 WHERE $7 AND u.kind <> 'refund' AND p.status = 'succeeded' AND NOT p.captured
             ), pay AS (
                 UPDATE payments SET
                     amount_refunded = amount_refunded
                         - CASE WHEN u.kind = 'refund' THEN u.amount ELSE 0 END,
                     last_operation_error = jsonb_build_object('type', u.kind,
                         'failure_code', u.failure_code, 'failure_message', u.failure_message,
                         'failed_at', u.finished_at),
                     status = CASE WHEN gone.payment_id IS NULL THEN payments.status
                                   ELSE 'cancelled' END,
                     amount_capturable = CASE WHEN gone.payment_id IS NULL
                                              THEN payments.amount_capturable ELSE 0 END,
                     cancelled_at = CASE WHEN gone.payment_id IS NULL THEN payments.cancelled_at
                                         ELSE now() END,
                     cancellation_reason = CASE WHEN gone.payment_id IS NULL
                                                     THEN payments.cancellation_reason
                                                WHEN u.kind = 'void'
                                                     THEN COALESCE(u.reason, 'requested_by_customer')
                                                ELSE 'automatic' END,
                     updated_at = now()
                 FROM updated u LEFT JOIN gone ON gone.payment_id = u.payment_id
                 WHERE payments.id = u.payment_id
                 RETURNING payments.id
             ), pay_history AS (
                 INSERT INTO payment_status_history (payment_id, from_status, to_status, actor, reason)
                 SELECT payment_id, 'succeeded', 'cancelled', $2,
                        'the processor no longer holds the authorization'
                 FROM gone
             ) " +
        ],
        "FROM updated",
        op.id.0,         // $1
        audit.actor,     // $2
        audit.reason,    // $3
        op.attempts,     // $4
        failure_code,    // $5
        failure_message, // $6
        released,        // $7
    )
    .fetch_optional(db)
    .await
}

/// `pending` → `failed` for a job given up before any claim (a message that
/// kept killing workers), as [`super::payments::fail_unclaimed`]: only an
/// operation known never to have reached the processor (not held, no unknown
/// outcome). A refund releases its reserved amount in the same statement;
/// the failure is the payment's `last_operation_error`.
pub async fn fail_unclaimed<'e>(
    db: impl PgExecutor<'e>,
    id: OperationId,
    failure_code: &str,
    failure_message: &str,
    audit: Audit<'_>,
) -> sqlx::Result<Option<OperationRow>> {
    fail_unclaimed!(operation_row, "operations", "operation_status_history", "operation_id",
        id: id.0, code: failure_code, message: failure_message, audit: audit,
        also: ", pay AS (
             UPDATE payments SET
                 amount_refunded = amount_refunded
                     - CASE WHEN u.kind = 'refund' THEN u.amount ELSE 0 END,
                 last_operation_error = jsonb_build_object('type', u.kind,
                     'failure_code', u.failure_code, 'failure_message', u.failure_message,
                     'failed_at', u.finished_at),
                 updated_at = now()
             FROM updated u WHERE payments.id = u.payment_id
             RETURNING payments.id
         )")
    .fetch_optional(db)
    .await
}

/// A job given up before any claim whose operation may have reached the
/// processor (its outcome is unknown, or a dead worker's claim is void):
/// held for an operator, its outcome marked unknown, as
/// [`super::payments::hold_unclaimed`]. A refund keeps its reserved amount:
/// it may have been paid.
pub async fn hold_unclaimed<'e>(
    db: impl PgExecutor<'e>,
    id: OperationId,
    last_error: &str,
    dead_after: Duration,
    audit: Audit<'_>,
) -> sqlx::Result<Option<OperationRow>> {
    hold_unclaimed!(operation_row, "operations", "operation_status_history", "operation_id",
        id: id.0, last_error: last_error, dead_after: dead_after, audit: audit)
    .fetch_optional(db)
    .await
}

/// `processing` → `pending`, retried as `retry` says, as
/// [`super::payments::schedule_retry`].
pub async fn schedule_retry<'e>(
    db: impl PgExecutor<'e>,
    op: &OperationRow,
    retry: &Retry<'_>,
    audit: Audit<'_>,
) -> sqlx::Result<Option<OperationRow>> {
    schedule_retry!(operation_row, "operations", "operation_status_history", "operation_id",
        id: op.id.0, attempt: op.attempts, retry: retry, audit: audit)
    .fetch_optional(db)
    .await
}

/// `processing` → `pending`, held for an operator, as
/// [`super::payments::hold`].
pub async fn hold<'e>(
    db: impl PgExecutor<'e>,
    op: &OperationRow,
    last_error: &str,
    audit: Audit<'_>,
) -> sqlx::Result<Option<OperationRow>> {
    hold!(operation_row, "operations", "operation_status_history", "operation_id",
        id: op.id.0, attempt: op.attempts, last_error: last_error, audit: audit)
    .fetch_optional(db)
    .await
}

/// Held or failed as not processed (`codes`) → `pending`: an operator
/// replays it. A refund failed as not processed reserves its amount again,
/// only if the payment still allows it (else the guard fails).
pub async fn replay<'e>(
    db: impl PgExecutor<'e>,
    id: OperationId,
    codes: &[&str],
    audit: Audit<'_>,
) -> sqlx::Result<Option<OperationRow>> {
    replay!(operation_row, "operations", "operation_status_history", "operation_id",
        id: id.0, codes: codes, audit: audit,
        failed_also: "(p.kind <> 'refund' OR EXISTS (
            SELECT 1 FROM payments pay WHERE pay.id = p.payment_id
              AND pay.amount_refunded + p.amount <= pay.amount_captured))",
        also: ", pay AS (
            UPDATE payments SET amount_refunded = amount_refunded + u.amount,
                updated_at = now()
            FROM updated u
            WHERE payments.id = u.payment_id AND u.kind = 'refund'
              AND u.from_status = 'failed'
            RETURNING payments.id
        )")
    .fetch_optional(db)
    .await
}

/// Operations whose message is late, as [`super::payments::take_overdue`].
#[derive(Debug)]
pub struct Overdue {
    pub id: OperationId,
    pub payment_id: Uuid,
    pub merchant_id: Uuid,
}

pub async fn take_overdue<'e>(
    db: impl PgExecutor<'e>,
    grace: Duration,
    dead_after: Duration,
    backlog: bool,
    limit: i64,
) -> sqlx::Result<Vec<Overdue>> {
    take_overdue!(Overdue, "operations", "id AS \"id: OperationId\", payment_id, merchant_id",
        grace: grace, dead_after: dead_after, backlog: backlog, limit: limit)
    .fetch_all(db)
    .await
}

/// Authorizations approved more than `ttl` ago and still uncaptured, with no
/// capture or void under way and never voided by the system before (at most
/// one automatic void per payment: one that failed is for an operator, never
/// sent again every pass): up to `limit` of them, to be voided.
pub async fn expired_authorizations<'e>(
    db: impl PgExecutor<'e>,
    ttl: Duration,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, Uuid)>> {
    let rows = sqlx::query!(
        "SELECT p.id, p.merchant_id FROM payments p
         WHERE p.status = 'succeeded' AND NOT p.captured AND p.amount_capturable > 0
           AND p.finished_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM operations o
                           WHERE o.payment_id = p.id AND o.kind IN ('capture', 'void')
                             AND (o.status IN ('pending', 'processing')
                                  OR (o.kind = 'void' AND o.requested_by = 'system')))
         ORDER BY p.finished_at
         LIMIT $2",
        ttl.as_secs_f64(),
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.merchant_id)).collect())
}
