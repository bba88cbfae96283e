//! A payment's charge, start to finish: claimed, sent to the processor (or
//! asked about, when an earlier outcome is unknown), and its outcome
//! recorded in one guarded statement; retries, holds and dead letters are
//! the engine's (`engine.rs`).

use std::time::Duration;

use common::db::lifecycle::{Audit, Knowledge};
use common::db::payments::{self, PaymentRow};
use common::domain::failure_codes;
use common::processor::ProcessorResponse;
use common::queue::Job;
use lapin::types::FieldTable;

use crate::context::Context;
use crate::engine::{claim_or_settle, hold, retry_or_give_up, Change, StepError, Work};
use crate::processor::{Charge, Outcome};

pub(crate) async fn process(
    ctx: &Context,
    job: &Job,
    props: Option<&FieldTable>,
) -> Result<(), StepError> {
    let id = job.payment_id();
    let claimed = claim_or_settle(
        ctx,
        job,
        props,
        || payments::find(&ctx.pool, id),
        || ctx.claims.run(id),
    )
    .await?;
    let Some(payment) = claimed else {
        return Ok(());
    };
    tracing::debug!(payment_id = %id, attempt = payment.attempts, "claimed");

    let started = std::time::Instant::now();
    let unknown = payment.outcome_unknown_since.is_some();
    let outcome = ctx.processor.settle(&Charge::of(&payment), unknown).await;
    ctx.metrics
        .processor_call(outcome.label(), started.elapsed());

    match outcome {
        Outcome::Approved(approved) => {
            let approval = payments::Approval {
                id,
                attempt: payment.attempts,
                captured: approved.captured,
                card: approved.card.clone(),
                processor_response: ProcessorResponse::approved(&approved, ctx.processor.name()),
                reason: if unknown {
                    "processor approved (confirmed after an unknown outcome)"
                } else {
                    "processor approved"
                },
            };
            let recorded = ctx.approvals.run(approval).await?;
            payment.finished(ctx, recorded, "succeeded");
        }
        Outcome::Declined(declined) => {
            let response = ProcessorResponse::declined(&declined, ctx.processor.name());
            record_failure(
                ctx,
                &payment,
                Failure {
                    recorded: payments::Failure {
                        code: &declined.code,
                        message: &declined.message,
                        // A processor that could not say which card (a
                        // Stripe decline of a card token) records none.
                        card: Some(&declined.card).filter(|card| !card.last4.is_empty()),
                        processor_response: Some(&response),
                    },
                    why: "processor declined",
                    outcome: "declined",
                },
            )
            .await?;
        }
        Outcome::Rejected(reason) => hold(ctx, job, &payment, &reason).await?,
        // A charge is never refused with an operation's code; if a processor
        // does, it refused our request: hold it for an operator.
        Outcome::Refused { code, .. } => {
            let reason = format!("processor refused the charge ({code})");
            hold(ctx, job, &payment, &reason).await?;
        }
        Outcome::Transient { reason, knowledge } => {
            retry_or_give_up(ctx, job, &payment, &reason, knowledge).await?;
        }
        Outcome::NotFound => {
            // `settle` only looks up before sending, and a send never answers
            // "not found"; should that change, retrying is the safe reading.
            let reason = "processor answered \"not found\" to a charge";
            retry_or_give_up(ctx, job, &payment, reason, Knowledge::Unknown).await?;
        }
    }
    Ok(())
}

impl Work for PaymentRow {
    fn noun(&self) -> &'static str {
        "payment"
    }
    fn call(&self) -> &'static str {
        "charge"
    }
    fn attempts_this_round(&self) -> i32 {
        PaymentRow::attempts_this_round(self)
    }
    fn is_processing(&self) -> bool {
        self.status == common::domain::PaymentStatus::Processing
    }

    async fn apply(
        &self,
        pool: &sqlx::PgPool,
        change: &Change<'_>,
        dead_after: Duration,
        audit: Audit<'_>,
    ) -> sqlx::Result<bool> {
        let (id, attempt) = (self.payment_id(), self.attempts);
        let row = match *change {
            Change::Retry(retry) => {
                payments::schedule_retry(pool, id, attempt, &retry, audit).await?
            }
            Change::FailNotProcessed { code, message } => {
                let failure = payments::Failure {
                    code,
                    message,
                    card: None,
                    processor_response: None,
                };
                payments::fail(pool, id, attempt, &failure, audit).await?
            }
            Change::Hold { last_error } => {
                payments::hold(pool, id, attempt, last_error, audit).await?
            }
            Change::FailUnclaimed { message } => {
                let code = failure_codes::NOT_PROCESSED;
                payments::fail_unclaimed(pool, id, code, message, audit).await?
            }
            Change::HoldUnclaimed { last_error } => {
                payments::hold_unclaimed(pool, id, last_error, dead_after, audit).await?
            }
        };
        Ok(row.is_some())
    }

    fn finished(&self, ctx: &Context, recorded: bool, outcome: &'static str) {
        if recorded {
            tracing::info!(payment_id = %self.payment_id(), outcome, attempts = self.attempts, "payment finished");
            ctx.metrics.finished(outcome, self.created_at);
        } else {
            tracing::warn!(
                payment_id = %self.payment_id(),
                "lost the claim before recording (lease expired and another worker took over); its result stands"
            );
        }
    }
}

/// A terminal failure of a claimed payment.
struct Failure<'a> {
    recorded: payments::Failure<'a>,
    /// For the history.
    why: &'a str,
    /// For metrics and logs.
    outcome: &'static str,
}

/// `processing` → `failed` under this worker's claim.
async fn record_failure(
    ctx: &Context,
    payment: &PaymentRow,
    failure: Failure<'_>,
) -> Result<(), StepError> {
    let audit = Audit {
        actor: &ctx.worker_id,
        reason: failure.why,
    };
    let row = ctx
        .db(|| {
            payments::fail(
                &ctx.pool,
                payment.payment_id(),
                payment.attempts,
                &failure.recorded,
                audit,
            )
        })
        .await?;
    payment.finished(ctx, row.is_some(), failure.outcome);
    Ok(())
}
