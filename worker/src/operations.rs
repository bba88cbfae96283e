//! One operation message (capture, void, refund), start to finish: the
//! same steps and guarantees as a charge (`step`): claim under a lease with
//! a heartbeat-backed claim, settle with the processor through the one
//! mechanism (`ProcessorClient::settle`: ask first when an outcome is
//! unknown), record the outcome with its effect on the payment in one
//! guarded statement, retry through the tiers, hold on a misconfiguration,
//! and never call an unknown outcome a failure.

use common::db::operations::{self, Kind, OperationRow};
use common::db::payments::{self, Audit, Knowledge};
use common::domain::failure_codes;
use common::processor::{CaptureRequest, RefundRequest, VoidRequest};
use common::queue::{headers, Job, Topology};
use lapin::types::FieldTable;
use rand::Rng as _;
use uuid::Uuid;

use crate::processor::{Capture, Operation, Outcome, Refund, Void};
use crate::step::{self, reasons, StepError, UNKNOWN_OUTCOME_PREFIX};
use crate::Context;

/// What the processor said, reduced to what the operation records.
enum Settled {
    Succeeded {
        processor_id: String,
    },
    Failed {
        code: String,
        message: String,
    },
    Rejected(String),
    Transient {
        reason: String,
        knowledge: Knowledge,
    },
}

impl<A: Identified, D: Refusal> From<Outcome<A, D>> for Settled {
    fn from(outcome: Outcome<A, D>) -> Self {
        match outcome {
            Outcome::Approved(done) => Self::Succeeded {
                processor_id: done.processor_id(),
            },
            Outcome::Declined(refusal) => {
                let (code, message) = refusal.code_and_message();
                Self::Failed { code, message }
            }
            Outcome::Refused { code, message } => Self::Failed { code, message },
            Outcome::Rejected(reason) => Self::Rejected(reason),
            Outcome::Transient { reason, knowledge } => Self::Transient { reason, knowledge },
            // `settle` never ends on "not found"; if it did, the safe reading
            // is that we do not know.
            Outcome::NotFound => Self::Transient {
                reason: "processor answered \"not found\"".into(),
                knowledge: Knowledge::Unknown,
            },
        }
    }
}

/// The processor's id of what it did.
trait Identified {
    fn processor_id(self) -> String;
}

impl Identified for common::processor::CaptureSucceeded {
    fn processor_id(self) -> String {
        self.id
    }
}
impl Identified for common::processor::VoidSucceeded {
    fn processor_id(self) -> String {
        self.id
    }
}
impl Identified for common::processor::RefundSucceeded {
    fn processor_id(self) -> String {
        self.id
    }
}

/// A `402` answer's code and message.
trait Refusal {
    fn code_and_message(self) -> (String, String);
}

impl Refusal for common::processor::RefundDeclined {
    fn code_and_message(self) -> (String, String) {
        (self.code, self.message)
    }
}
impl Refusal for common::processor::ProcessorErrorBody {
    fn code_and_message(self) -> (String, String) {
        (self.error.code, self.error.message)
    }
}

async fn settle<O: Operation>(ctx: &Context, op: &O, unknown: bool) -> Settled
where
    O::Approved: Identified,
    O::Declined: Refusal,
{
    let started = std::time::Instant::now();
    let outcome = ctx.processor.settle(op, unknown).await;
    ctx.metrics
        .processor_call(outcome.label(), started.elapsed());
    outcome.into()
}

/// The processor's idempotency key of an operation: stable across every
/// attempt and worker.
pub fn idempotency_key(op: &OperationRow) -> String {
    format!("{}_{}", op.kind().as_str(), op.id)
}

pub(crate) async fn process(
    ctx: &Context,
    job: &Job,
    operation_id: Uuid,
    props: Option<&FieldTable>,
) -> Result<(), StepError> {
    let redeliveries = headers::get_int(props, "x-delivery-count").unwrap_or(0);
    if redeliveries >= step::POISON_REDELIVERIES {
        // The operation is left as it is (never failed: it may have reached
        // the processor); the rescuer sends it again later, and the dead
        // letter tells an operator.
        let error = format!("message redelivered {redeliveries} times");
        tracing::warn!(operation_id = %operation_id, redeliveries, "poison operation message; dead-lettering");
        return step::publish_dead(ctx, job, reasons::REDELIVERED_TOO_OFTEN, &error, 0).await;
    }
    let audit = Audit {
        actor: &ctx.worker_id,
        reason: "claimed",
    };
    let claimed = ctx
        .db(|| {
            operations::claim(
                &ctx.pool,
                operation_id,
                ctx.settings.lease,
                ctx.settings.dead_after,
                audit,
            )
        })
        .await?;
    let Some(op) = claimed else {
        match ctx.db(|| operations::find(&ctx.pool, operation_id)).await? {
            None => {
                tracing::warn!(operation_id = %operation_id, "message for an unknown operation; dead-lettering it");
                step::dead_letter_raw(
                    ctx,
                    &job.to_bytes(),
                    reasons::UNKNOWN_PAYMENT,
                    "no such operation",
                    0,
                )
                .await?;
            }
            Some(row) if row.status == "processing" => step::defer(ctx, job).await?,
            Some(_) => {}
        }
        return Ok(());
    };
    let payment = ctx
        .db(|| payments::find(&ctx.pool, job.payment_id()))
        .await?;
    let charge_id = payment
        .as_ref()
        .and_then(|p| p.processor_response.as_ref())
        .and_then(|r| r.0.get("charge_id"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let Some(charge_id) = charge_id else {
        // An operation is only created on a payment the processor charged;
        // without its charge id nothing can be asked: hold it, loudly.
        let reason = "the payment has no processor charge id";
        return hold(ctx, job, &op, reason).await;
    };
    let unknown = op.outcome_unknown_since.is_some();
    let key = idempotency_key(&op);
    let settled = match op.kind() {
        Kind::Capture => {
            let capture = Capture {
                key,
                charge_id,
                request: CaptureRequest {
                    amount: Some(op.amount),
                },
            };
            settle(ctx, &capture, unknown).await
        }
        Kind::Void => {
            let void = Void {
                key,
                charge_id,
                request: VoidRequest {},
            };
            settle(ctx, &void, unknown).await
        }
        Kind::Refund => {
            let refund = Refund {
                key,
                request: RefundRequest {
                    charge: charge_id,
                    amount: op.amount,
                    reference: common::domain::RefundId(op.id).to_string(),
                },
            };
            settle(ctx, &refund, unknown).await
        }
    };
    match settled {
        Settled::Succeeded { processor_id } => {
            let audit = Audit {
                actor: &ctx.worker_id,
                reason: "processor did it",
            };
            let row = ctx
                .db(|| operations::succeed(&ctx.pool, &op, &processor_id, audit))
                .await?;
            finished(&op, row.is_some(), "succeeded");
        }
        Settled::Failed { code, message } => {
            let audit = Audit {
                actor: &ctx.worker_id,
                reason: "processor refused",
            };
            let row = ctx
                .db(|| operations::fail(&ctx.pool, &op, &code, &message, audit))
                .await?;
            finished(&op, row.is_some(), "failed");
        }
        Settled::Rejected(reason) => hold(ctx, job, &op, &reason).await?,
        Settled::Transient { reason, knowledge } => {
            retry_or_give_up(ctx, job, &op, &reason, knowledge).await?;
        }
    }
    Ok(())
}

fn finished(op: &OperationRow, recorded: bool, outcome: &'static str) {
    if recorded {
        tracing::info!(operation_id = %op.id, kind = op.kind().as_str(), outcome, "operation finished");
    } else {
        tracing::warn!(operation_id = %op.id, "lost the claim before recording; its result stands");
    }
}

async fn hold(ctx: &Context, job: &Job, op: &OperationRow, reason: &str) -> Result<(), StepError> {
    tracing::error!(
        operation_id = %op.id,
        error = reason,
        "the card processor refused our request: check PROCESSOR_URL and the credentials; \
         the job is held in the dead-letter queue until `worker dlq replay`"
    );
    step::publish_dead(
        ctx,
        job,
        reasons::PROCESSOR_REJECTED,
        reason,
        op.attempts_this_round(),
    )
    .await?;
    let message = format!("held for an operator: {reason}");
    let audit = Audit {
        actor: &ctx.worker_id,
        reason: "processor rejected the request; held and dead-lettered",
    };
    ctx.db(|| operations::hold(&ctx.pool, op, &message, audit))
        .await?;
    ctx.metrics.held();
    Ok(())
}

/// As a charge's: only attempts known not to have reached the processor
/// count towards giving up; an unknown outcome is asked about for as long as
/// it takes.
async fn retry_or_give_up(
    ctx: &Context,
    job: &Job,
    op: &OperationRow,
    error: &str,
    knowledge: Knowledge,
) -> Result<(), StepError> {
    let attempts = op.attempts_this_round();
    if attempts >= ctx.settings.max_attempts && knowledge == Knowledge::NotProcessed {
        step::publish_dead(ctx, job, reasons::ATTEMPTS_EXHAUSTED, error, attempts).await?;
        let message = format!("Not processed: the card processor could not be reached after {attempts} attempts. It can be retried.");
        let audit = Audit {
            actor: &ctx.worker_id,
            reason: "attempts exhausted; dead-lettered",
        };
        let row = ctx
            .db(|| {
                operations::fail(
                    &ctx.pool,
                    op,
                    failure_codes::PROCESSOR_UNAVAILABLE,
                    &message,
                    audit,
                )
            })
            .await?;
        finished(op, row.is_some(), "dead_lettered");
        return Ok(());
    }
    let last_error = match knowledge {
        Knowledge::Unknown => format!("{UNKNOWN_OUTCOME_PREFIX}{error}"),
        Knowledge::NotProcessed => error.to_owned(),
    };
    let tier = ctx.settings.retry_delays.tier(attempts);
    let delay = tier.mul_f64(rand::thread_rng().gen_range(0.8..=1.0));
    let audit = Audit {
        actor: &ctx.worker_id,
        reason: "transient processor error; retry scheduled",
    };
    let row = ctx
        .db(|| {
            operations::schedule_retry(&ctx.pool, op, &last_error, delay, tier, knowledge, audit)
        })
        .await?;
    if row.is_none() {
        return Ok(());
    }
    ctx.metrics.retried();
    let published = ctx
        .broker
        .publish(
            &Topology::retry_key(tier),
            &job.to_bytes(),
            headers::build(&[(headers::ATTEMPT, headers::int(i64::from(attempts)))]),
            Some(delay),
        )
        .await;
    if let Err(err) = published {
        tracing::warn!(operation_id = %op.id, error = %err, "could not publish the retry; the rescuer will pick it up");
    }
    Ok(())
}
