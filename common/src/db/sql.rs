//! The column lists of the two job tables, as macros around
//! `sqlx::query_as!`, so that every statement reading whole rows is checked
//! against the schema when the crate is built (online with `DATABASE_URL`,
//! or offline from the committed `.sqlx/` with `SQLX_OFFLINE=true`).
//!
//! `query_as!` takes its SQL as string literals joined with `+`; these
//! macros only put such literals together. `payment_row!([before +] "FROM
//! …", binds…)` is the statement `before` followed by a `SELECT` of every
//! column of a payment, typed ([`super::payments::PaymentRow`]);
//! `operation_row!` the same for an operation. The column types are named
//! as the module using the macro imports them (`PaymentStatus`, `Currency`,
//! `CardToken`, `Kind`, `OperationId`, `Json`, `Value`, `CardDetails`,
//! `ProcessorResponse`): full paths would pass PostgreSQL's 63-byte limit
//! on a column alias. The statements of the job lifecycle that both tables
//! share are in [`super::lifecycle`].

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
            "SELECT id AS \"id: OperationId\", payment_id, merchant_id, kind AS \"kind: Kind\",
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
