//! The statements every row type shares, as macros around
//! `sqlx::query_as!`, so that every one of them is checked against the
//! schema when the crate is built (online with `DATABASE_URL`, or offline
//! from the committed `.sqlx/` with `SQLX_OFFLINE=true`).
//!
//! `query_as!` takes its SQL as string literals joined with `+`; these
//! macros only put such literals together. Read a call as the statement it
//! makes:
//!
//! - `payment_row!([before +] "FROM …", binds…)` selects every column of a
//!   payment, typed ([`super::payments::PaymentRow`]); `operation_row!`
//!   the same for an operation. The column types are named as the module
//!   using the macro imports them (`PaymentStatus`, `Currency`, `CardToken`,
//!   `Kind`, `Json`, `Value`, `CardDetails`, `ProcessorResponse`): full
//!   paths would pass PostgreSQL's 63-byte limit on a column alias.
//! - `transition!` is the one shape of a status change: lock the row,
//!   check the guard against the locked status (`old.status`) and the row
//!   (`p`), update, write the history row, all in one statement; `$1` is
//!   the id, `$2` the actor, `$3` the reason. `also` adds CTEs that run in
//!   the same statement, reading `updated` (effects on other rows that must
//!   happen together or not at all). The guards and changes that payments
//!   and operations share have names: `own_claim`, `claimable`,
//!   `known_unprocessed`; `claim`, `retry`, `hold`, `fail_unclaimed`,
//!   `hold_unclaimed`.

/// Every column of `payments`, typed as [`super::payments::PaymentRow`].
macro_rules! payment_row {
    ([$($before:tt)*], $after:literal $($binds:tt)*) => {
        sqlx::query_as!(
            $crate::db::payments::PaymentRow,
            $($before)*
            "SELECT id, merchant_id, status AS \"status: PaymentStatus\", amount,
                currency AS \"currency: Currency\", capture, captured,
                card_token AS \"card_token: CardToken\", order_id, invoice_id,
                customer_id, customer_email, customer_name, description, statement_descriptor,
                billing_address AS \"billing_address: Json<Value>\",
                metadata AS \"metadata: Json<Value>\", receipt_number,
                card AS \"card: Json<CardDetails>\",
                processor_response AS \"processor_response: Json<ProcessorResponse>\",
                failure_code, failure_message, attempts, replayed_attempts, last_error,
                next_attempt_at, lease_expires_at, due_at, created_at, updated_at, finished_at,
                outcome_unknown_since, held_at, claimed_by, amount_capturable, amount_captured,
                captured_at,
                capture_details AS \"capture_details: Json<Value>\",
                amount_refunded, cancelled_at, cancellation_reason,
                last_operation_error AS \"last_operation_error: Json<Value>\" "
            + $after
            $($binds)*
        )
    };
}

/// Every column of `operations`, typed as
/// [`super::operations::OperationRow`].
macro_rules! operation_row {
    ([$($before:tt)*], $after:literal $($binds:tt)*) => {
        sqlx::query_as!(
            $crate::db::operations::OperationRow,
            $($before)*
            "SELECT id, payment_id, merchant_id, kind AS \"kind: Kind\",
                status AS \"status: OperationStatus\", amount,
                currency AS \"currency: Currency\", requested_by,
                reason, notes, statement_descriptor,
                metadata AS \"metadata: Json<Value>\", processor_id, failure_code,
                failure_message, attempts, replayed_attempts, last_error, next_attempt_at,
                lease_expires_at, due_at, outcome_unknown_since, held_at, claimed_by, created_at,
                updated_at, finished_at "
            + $after
            $($binds)*
        )
    };
}

/// A guarded status change with its history row, in one statement (see the
/// module doc). `row` is `payment_row` or `operation_row`; `table`,
/// `history` and `key` name the table, its history table and that table's
/// key column.
macro_rules! transition {
    // The guards and changes payments and operations share, by name.
    (@$row:ident $t:tt $h:tt $k:tt, guard: own_claim, $($rest:tt)*) => {
        // `attempts` is the fencing token: a worker whose lease expired and
        // whose row was claimed again cannot overwrite the newer claim's
        // result. `$4` is the claim's attempt.
        transition!(@$row $t $h $k, guard: "old.status = 'processing' AND p.attempts = $4", $($rest)*)
    };
    (@$row:ident $t:tt $h:tt $k:tt, guard: claimable, $($rest:tt)*) => {
        // `pending` and not held, or `processing` under a void claim (the
        // SQL function `claim_is_void`; `$5` is `dead_after` in seconds).
        transition!(@$row $t $h $k, guard: "((old.status = 'pending' AND p.held_at IS NULL)
            OR (old.status = 'processing'
                AND claim_is_void(p.lease_expires_at, p.claimed_by, $5)))", $($rest)*)
    };
    (@$row:ident $t:tt $h:tt $k:tt, guard: known_unprocessed, $($rest:tt)*) => {
        // `pending`, not held, and no unknown outcome: the processor
        // certainly never acted on it.
        transition!(@$row $t $h $k, guard: "old.status = 'pending' AND p.held_at IS NULL
            AND p.outcome_unknown_since IS NULL", $($rest)*)
    };
    (@$row:ident $t:tt $h:tt $k:tt, guard: $g:literal, set: claim, $($rest:tt)*) => {
        // `$2` the worker, `$4` the lease in seconds. Taking over a void
        // claim marks the outcome unknown.
        transition!(@$row $t $h $k, guard: $g, set: "status = 'processing',
            attempts = p.attempts + 1, claimed_by = $2,
            outcome_unknown_since = CASE WHEN old.status = 'processing'
                THEN COALESCE(p.outcome_unknown_since, now()) ELSE p.outcome_unknown_since END,
            lease_expires_at = now() + make_interval(secs => $4),
            due_at = now() + make_interval(secs => $4), next_attempt_at = NULL", $($rest)*)
    };
    (@$row:ident $t:tt $h:tt $k:tt, guard: $g:literal, set: retry, $($rest:tt)*) => {
        // `$5` last error, `$6` delay, `$7` the tier, `$8` whether the
        // outcome is unknown.
        transition!(@$row $t $h $k, guard: $g, set: "status = 'pending', last_error = $5,
            next_attempt_at = now() + make_interval(secs => $6),
            due_at = now() + make_interval(secs => $7), lease_expires_at = NULL,
            outcome_unknown_since = CASE WHEN $8 THEN COALESCE(p.outcome_unknown_since, now()) END",
            $($rest)*)
    };
    (@$row:ident $t:tt $h:tt $k:tt, guard: $g:literal, set: hold, $($rest:tt)*) => {
        // `$5` last error.
        transition!(@$row $t $h $k, guard: $g, set: "status = 'pending', held_at = now(),
            last_error = $5, next_attempt_at = NULL, lease_expires_at = NULL, due_at = NULL",
            $($rest)*)
    };
    (@$row:ident $t:tt $h:tt $k:tt, guard: $g:literal, set: fail_unclaimed, $($rest:tt)*) => {
        // `$4` failure code, `$5` failure message.
        transition!(@$row $t $h $k, guard: $g, set: "status = 'failed', failure_code = $4,
            failure_message = $5, next_attempt_at = NULL, lease_expires_at = NULL, due_at = NULL,
            finished_at = now()", $($rest)*)
    };
    (@$row:ident $t:tt $h:tt $k:tt, guard: $g:literal, set: hold_unclaimed, $($rest:tt)*) => {
        // `$4` last error. Taking over a void claim marks the outcome
        // unknown, as a claim would.
        transition!(@$row $t $h $k, guard: $g, set: "status = 'pending', held_at = now(),
            last_error = $4,
            outcome_unknown_since = CASE WHEN old.status = 'processing'
                THEN COALESCE(p.outcome_unknown_since, now()) ELSE p.outcome_unknown_since END,
            next_attempt_at = NULL, lease_expires_at = NULL, due_at = NULL", $($rest)*)
    };
    // The statement itself.
    (@$row:ident $table:literal $history:literal $key:literal,
     guard: $guard:literal, set: $set:literal, also: $also:literal $($binds:tt)*) => {
        $row!([
            "WITH old AS (SELECT id, status FROM " + $table + " WHERE id = $1 FOR UPDATE),
             updated AS (
                 UPDATE " + $table + " p SET " + $set + ", updated_at = now()
                 FROM old
                 WHERE p.id = old.id AND " + $guard + "
                 RETURNING p.*, old.status AS from_status
             ), history AS (
                 INSERT INTO " + $history + " (" + $key + ", from_status, to_status, actor, reason)
                 SELECT id, from_status, status, $2, $3 FROM updated
             )" + $also + " " +
        ], "FROM updated" $($binds)*)
    };
}

/// A payment's [`transition!`]: binds the id, actor and reason, then
/// `binds`, and reads the changed row (`None`: the guard failed).
macro_rules! payment_transition {
    ($db:expr, $id:expr, $audit:expr, guard: $guard:tt, set: $set:tt, binds: [$($binds:tt)*] $(,)?) => {
        transition!(@payment_row "payments" "payment_status_history" "payment_id",
            guard: $guard, set: $set, also: "", $id.0, $audit.actor, $audit.reason, $($binds)*)
        .fetch_optional($db)
        .await
    };
}

/// An operation's [`transition!`], with `also` for its effect on the
/// payment; `also: record_failure` gives back the amount a refund reserved
/// (a capture or void reserves nothing) and writes the payment's
/// `last_operation_error`, for the statements that fail one.
macro_rules! operation_transition {
    ($db:expr, $id:expr, $audit:expr, guard: $guard:tt, set: $set:tt, also: record_failure,
     binds: $binds:tt $(,)?) => {
        operation_transition!($db, $id, $audit, guard: $guard, set: $set, also: ", pay AS (
                UPDATE payments SET
                    amount_refunded = amount_refunded
                        - CASE WHEN u.kind = 'refund' THEN u.amount ELSE 0 END,
                    last_operation_error = jsonb_build_object('type', u.kind,
                        'failure_code', u.failure_code, 'failure_message', u.failure_message,
                        'failed_at', u.finished_at),
                    updated_at = now()
                FROM updated u WHERE payments.id = u.payment_id
                RETURNING payments.id
            )", binds: $binds)
    };
    ($db:expr, $id:expr, $audit:expr, guard: $guard:tt, set: $set:tt, also: $also:tt,
     binds: [$($binds:tt)*] $(,)?) => {
        transition!(@operation_row "operations" "operation_status_history" "operation_id",
            guard: $guard, set: $set, also: $also, $id, $audit.actor, $audit.reason, $($binds)*)
        .fetch_optional($db)
        .await
    };
}

/// The rescuer's statement over `$table` (see
/// [`super::payments::take_overdue`]), rows read as `$out` with the columns
/// `$returning`: binds `$1` grace, `$2` limit, `$3` backlog, `$4`
/// dead_after.
macro_rules! take_overdue {
    ($out:path, $table:literal, $returning:literal, $grace:expr, $dead_after:expr, $backlog:expr, $limit:expr) => {
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
            $grace.as_secs_f64(),
            $limit,
            $backlog,
            $dead_after.as_secs_f64(),
        )
    };
}
