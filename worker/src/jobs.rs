//! One message of the process queue: decoded, then run as the job it
//! names, a payment's charge (`charge.rs`) or an operation
//! (`operations.rs`); a message that does not decode is dead-lettered.

use common::dead_letters::DeadLetterReason;
use common::queue::Job;
use lapin::types::FieldTable;
use tracing::Instrument as _;

use crate::context::Context;
use crate::engine::{dead_letter_raw, StepError};

/// Runs one message.
pub async fn handle(
    ctx: &Context,
    body: &[u8],
    props: Option<&FieldTable>,
) -> Result<(), StepError> {
    let job = match Job::from_bytes(body) {
        Ok(job) => job,
        Err(err) => {
            // Only the class and position: serde's message can quote values
            // from the body, and a body is never logged.
            let error = format!(
                "cannot decode the message ({:?} error at line {}, column {})",
                err.classify(),
                err.line(),
                err.column()
            );
            tracing::warn!(error = %error, "undecodable message; dead-lettering it");
            dead_letter_raw(ctx, body, DeadLetterReason::Undecodable, &error, 0).await?;
            return Ok(());
        }
    };
    let span = tracing::info_span!("payment", payment_id = %job.payment_id());
    match job.operation_id() {
        None => {
            crate::charge::process(ctx, &job, props)
                .instrument(span)
                .await
        }
        Some(operation_id) => {
            crate::operations::process(ctx, &job, operation_id, props)
                .instrument(span)
                .await
        }
    }
}
