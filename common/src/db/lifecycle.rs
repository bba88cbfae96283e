//! What a job's lifecycle is, payments' and operations' alike: who made a
//! change and why ([`Audit`]), the API request behind it ([`Origin`]), a
//! retry to schedule with what is known of the last call ([`Retry`],
//! [`Knowledge`]), and the statements both tables run, written once here
//! over either table.
//!
//! Each statement is a macro named after its transition, taking the row
//! macro (`payment_row` or `operation_row`, module `sql`), the table, its
//! history table and that table's key column; its body is the whole
//! statement in plain SQL with its binds listed beside it, each commented
//! with its `$n`. It gives back the `query_as!` to fetch. Every status
//! change has one shape: lock the row (`old`), update it if the guard holds
//! against the locked status (`old.status`) and the row (`p`), and write
//! its history row (`$2` the actor, `$3` the reason), in one statement; the
//! caller reads the changed row (none: the guard failed, and the caller
//! must not act). A statement that fences by `attempts` updates the row
//! only under the claim it was given: a worker whose lease expired and
//! whose row was claimed again cannot overwrite the newer claim's result.
//!
//! - `claim!` ([`super::payments::claim_many`], [`super::operations::claim`])
//! - `schedule_retry!`, `hold!` (under a claim)
//! - `hold_unclaimed!`, `fail_unclaimed!` (a job given up before any claim)
//! - `replay!` (an operator's replay of a failed or held job)
//! - `take_overdue!` (the rescuer's scan)
//!
//! The transitions only one table has are written out in its own module.

use std::time::Duration;

/// The API request behind a change: its id and `Idempotency-Key`, kept in
/// the history row so the change's event can name it. Empty for changes
/// the worker makes.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Who made a change and why, for the history table.
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    pub actor: &'a str,
    pub reason: &'a str,
}

/// What the latest processor call left us knowing, for the `schedule_retry` of payments and operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knowledge {
    /// The call may have reached the processor: mark the outcome unknown
    /// (keeping the earliest time it became so).
    Unknown,
    /// The processor certainly did not act on it (refused before acting, or
    /// a lookup found nothing): the outcome is known again.
    NotProcessed,
}

/// A retry to schedule after a transient error: in `delay` (jittered
/// within the retry tier `tier`). The rescuer looks again only after the
/// tier's full delay, the upper bound of the jitter, so a retry waiting in
/// its tier never looks overdue.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    pub last_error: &'a str,
    pub delay: Duration,
    pub tier: Duration,
    pub knowledge: Knowledge,
}

/// `pending` (not held), or `processing` under a void claim (the SQL
/// function `claim_is_void`), → `processing` under a new claim by
/// `audit.actor` for `lease`, for each of `ids` (a `&[Uuid]`). Taking over
/// a void claim marks the outcome unknown: the dead worker may have sent
/// the call. The rows are locked in id order, so two claims of overlapping
/// sets wait for each other instead of deadlocking, and each is looked up
/// by its key (a nested loop the planner cannot turn into a scan of the
/// table: see migration `20261204000200_payment_lookups_by_key.sql`).
macro_rules! claim {
    ($row:ident, $table:literal, $history:literal, $key:literal,
     ids: $ids:expr, lease: $lease:expr, dead_after: $dead_after:expr, audit: $audit:expr $(,)?) => {
        $row!(
            [
                "WITH old AS (
                     SELECT r.id, r.status
                     FROM (SELECT DISTINCT unnest($1::uuid[]) AS id ORDER BY 1) wanted
                     CROSS JOIN LATERAL (
                         SELECT id, status FROM " + $table + " WHERE id = wanted.id FOR UPDATE
                     ) r
                 ), updated AS (
                     UPDATE " + $table + " p SET status = 'processing', attempts = p.attempts + 1,
                         claimed_by = $2,
                         outcome_unknown_since = CASE WHEN old.status = 'processing'
                             THEN COALESCE(p.outcome_unknown_since, now())
                             ELSE p.outcome_unknown_since END,
                         lease_expires_at = now() + make_interval(secs => $4),
                         due_at = now() + make_interval(secs => $4), next_attempt_at = NULL,
                         updated_at = now()
                     FROM old
                     WHERE p.id = old.id
                       AND ((old.status = 'pending' AND p.held_at IS NULL)
                            OR (old.status = 'processing'
                                AND claim_is_void(p.lease_expires_at, p.claimed_by, $5)))
                     RETURNING p.*, old.status AS from_status
                 ), history AS (
                     INSERT INTO " + $history + " (" + $key + ", from_status, to_status, actor,
                         reason)
                     SELECT id, from_status, status, $2, $3 FROM updated
                 ) " +
            ],
            "FROM updated",
            $ids,                      // $1
            $audit.actor,              // $2
            $audit.reason,             // $3
            $lease.as_secs_f64(),      // $4
            $dead_after.as_secs_f64(), // $5
        )
    };
}

/// `processing` (the claim of `attempt`) → `pending` after a transient
/// error, to be retried as `retry` (a [`Retry`]) says: the next attempt in
/// its delay, due for the rescuer after its tier, the outcome marked
/// unknown (keeping since when) or known again.
macro_rules! schedule_retry {
    ($row:ident, $table:literal, $history:literal, $key:literal,
     id: $id:expr, attempt: $attempt:expr, retry: $retry:expr, audit: $audit:expr $(,)?) => {
        $row!(
            [
                "WITH old AS (SELECT id, status FROM " + $table + " WHERE id = $1 FOR UPDATE),
                 updated AS (
                     UPDATE " + $table + " p SET status = 'pending', last_error = $5,
                         next_attempt_at = now() + make_interval(secs => $6),
                         due_at = now() + make_interval(secs => $7), lease_expires_at = NULL,
                         outcome_unknown_since = CASE WHEN $8
                             THEN COALESCE(p.outcome_unknown_since, now()) END,
                         updated_at = now()
                     FROM old
                     WHERE p.id = old.id AND old.status = 'processing' AND p.attempts = $4
                     RETURNING p.*, old.status AS from_status
                 ), history AS (
                     INSERT INTO " + $history + " (" + $key + ", from_status, to_status, actor,
                         reason)
                     SELECT id, from_status, status, $2, $3 FROM updated
                 ) " +
            ],
            "FROM updated",
            $id,                                            // $1
            $audit.actor,                                   // $2
            $audit.reason,                                  // $3
            $attempt,                                       // $4
            $retry.last_error,                              // $5
            $retry.delay.as_secs_f64(),                     // $6
            $retry.tier.max($retry.delay).as_secs_f64(),    // $7
            $retry.knowledge == $crate::db::lifecycle::Knowledge::Unknown, // $8
        )
    };
}

/// `processing` (the claim of `attempt`) → `pending`, held for an operator
/// with `last_error`: nothing due, nothing scheduled. An unknown outcome
/// stays marked.
macro_rules! hold {
    ($row:ident, $table:literal, $history:literal, $key:literal,
     id: $id:expr, attempt: $attempt:expr, last_error: $last_error:expr, audit: $audit:expr $(,)?) => {
        $row!(
            [
                "WITH old AS (SELECT id, status FROM " + $table + " WHERE id = $1 FOR UPDATE),
                 updated AS (
                     UPDATE " + $table + " p SET status = 'pending', held_at = now(),
                         last_error = $5, next_attempt_at = NULL, lease_expires_at = NULL,
                         due_at = NULL, updated_at = now()
                     FROM old
                     WHERE p.id = old.id AND old.status = 'processing' AND p.attempts = $4
                     RETURNING p.*, old.status AS from_status
                 ), history AS (
                     INSERT INTO " + $history + " (" + $key + ", from_status, to_status, actor,
                         reason)
                     SELECT id, from_status, status, $2, $3 FROM updated
                 ) " +
            ],
            "FROM updated",
            $id,           // $1
            $audit.actor,  // $2
            $audit.reason, // $3
            $attempt,      // $4
            $last_error,   // $5
        )
    };
}

/// A job given up before any claim that may have reached the processor:
/// claimable (`pending` and not held, or `processing` under a void claim)
/// → `pending`, held with `last_error`. Taking over a void claim marks the
/// outcome unknown, as a claim would.
macro_rules! hold_unclaimed {
    ($row:ident, $table:literal, $history:literal, $key:literal,
     id: $id:expr, last_error: $last_error:expr, dead_after: $dead_after:expr,
     audit: $audit:expr $(,)?) => {
        $row!(
            [
                "WITH old AS (SELECT id, status FROM " + $table + " WHERE id = $1 FOR UPDATE),
                 updated AS (
                     UPDATE " + $table + " p SET status = 'pending', held_at = now(),
                         last_error = $4,
                         outcome_unknown_since = CASE WHEN old.status = 'processing'
                             THEN COALESCE(p.outcome_unknown_since, now())
                             ELSE p.outcome_unknown_since END,
                         next_attempt_at = NULL, lease_expires_at = NULL, due_at = NULL,
                         updated_at = now()
                     FROM old
                     WHERE p.id = old.id
                       AND ((old.status = 'pending' AND p.held_at IS NULL)
                            OR (old.status = 'processing'
                                AND claim_is_void(p.lease_expires_at, p.claimed_by, $5)))
                     RETURNING p.*, old.status AS from_status
                 ), history AS (
                     INSERT INTO " + $history + " (" + $key + ", from_status, to_status, actor,
                         reason)
                     SELECT id, from_status, status, $2, $3 FROM updated
                 ) " +
            ],
            "FROM updated",
            $id,                       // $1
            $audit.actor,              // $2
            $audit.reason,             // $3
            $last_error,               // $4
            $dead_after.as_secs_f64(), // $5
        )
    };
}

/// A job given up before any claim, known never to have reached the
/// processor (`pending`, not held, no unknown outcome) → `failed` with
/// `code` and `message`. `also`, if given, adds CTEs run in the same
/// statement, reading `updated`: the change's effect on other rows.
macro_rules! fail_unclaimed {
    ($row:ident, $table:literal, $history:literal, $key:literal,
     id: $id:expr, code: $code:expr, message: $message:expr, audit: $audit:expr
     $(, also: $also:literal)? $(,)?) => {
        $row!(
            [
                "WITH old AS (SELECT id, status FROM " + $table + " WHERE id = $1 FOR UPDATE),
                 updated AS (
                     UPDATE " + $table + " p SET status = 'failed', failure_code = $4,
                         failure_message = $5, next_attempt_at = NULL, lease_expires_at = NULL,
                         due_at = NULL, finished_at = now(), updated_at = now()
                     FROM old
                     WHERE p.id = old.id AND old.status = 'pending' AND p.held_at IS NULL
                       AND p.outcome_unknown_since IS NULL
                     RETURNING p.*, old.status AS from_status
                 ), history AS (
                     INSERT INTO " + $history + " (" + $key + ", from_status, to_status, actor,
                         reason)
                     SELECT id, from_status, status, $2, $3 FROM updated
                 )" $(+ $also)? + " " +
            ],
            "FROM updated",
            $id,           // $1
            $audit.actor,  // $2
            $audit.reason, // $3
            $code,         // $4
            $message,      // $5
        )
    };
}

/// `failed` as not processed (one of `codes`, a `&[&str]`), or held, →
/// `pending`: an operator replays it. The attempt budget starts afresh;
/// `attempts` itself is never reset, and an unknown outcome stays marked
/// (the next step asks the processor first). `failed_also`, if given, is a
/// further condition on a failed row `p`, in plain SQL; `also`, as in
/// `fail_unclaimed!`, adds CTEs reading `updated`.
macro_rules! replay {
    ($row:ident, $table:literal, $history:literal, $key:literal,
     id: $id:expr, codes: $codes:expr, audit: $audit:expr
     $(, failed_also: $failed_also:literal)? $(, also: $also:literal)? $(,)?) => {
        $row!(
            [
                "WITH old AS (SELECT id, status FROM " + $table + " WHERE id = $1 FOR UPDATE),
                 updated AS (
                     UPDATE " + $table + " p SET status = 'pending', failure_code = NULL,
                         failure_message = NULL, last_error = NULL,
                         replayed_attempts = p.attempts, next_attempt_at = NULL, due_at = now(),
                         held_at = NULL, finished_at = NULL, updated_at = now()
                     FROM old
                     WHERE p.id = old.id
                       AND ((old.status = 'failed' AND p.failure_code = ANY($4)"
                     $(+ " AND " + $failed_also)? + ")
                            OR (old.status = 'pending' AND p.held_at IS NOT NULL))
                     RETURNING p.*, old.status AS from_status
                 ), history AS (
                     INSERT INTO " + $history + " (" + $key + ", from_status, to_status, actor,
                         reason)
                     SELECT id, from_status, status, $2, $3 FROM updated
                 )" $(+ $also)? + " " +
            ],
            "FROM updated",
            $id,           // $1
            $audit.actor,  // $2
            $audit.reason, // $3
            $codes as _,   // $4
        )
    };
}

/// The rescuer's scan over `$table` (see [`super::payments::take_overdue`]):
/// up to `limit` rows whose message is late by more than `grace`, marked
/// due again in `grace`, read as `$out` with the columns `$returning`.
macro_rules! take_overdue {
    ($out:path, $table:literal, $returning:literal,
     grace: $grace:expr, dead_after: $dead_after:expr, backlog: $backlog:expr,
     limit: $limit:expr $(,)?) => {
        sqlx::query_as!(
            $out,
            "UPDATE "
                + $table
                + " SET due_at = now() + make_interval(secs => $1)
             WHERE id IN (
                 SELECT id FROM "
                + $table
                + " p
                 WHERE p.due_at < now() - make_interval(secs => $1)
                   AND ((p.status = 'processing'
                             AND claim_is_void(p.lease_expires_at, p.claimed_by, $4))
                        OR (p.status = 'pending' AND p.next_attempt_at IS NOT NULL)
                        OR (p.status = 'pending' AND NOT $3))
                 ORDER BY p.due_at
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             )
             RETURNING "
                + $returning,
            $grace.as_secs_f64(),      // $1
            $limit,                    // $2
            $backlog,                  // $3
            $dead_after.as_secs_f64(), // $4
        )
    };
}
