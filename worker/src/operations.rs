//! One operation message (capture, void, refund), start to finish: the
//! same steps and guarantees as a charge (`step`): claim under a lease with
//! a heartbeat-backed claim, settle with the processor through the one
//! mechanism (`ProcessorClient::settle`: ask first when an outcome is
//! unknown), record the outcome with its effect on the payment in one
//! guarded statement, retry through the tiers, hold on a misconfiguration,
//! and never call an unknown outcome a failure. Retrying, holding and the
//! poison path are the charge's own functions (`engine::Work`): a poison
//! message fails its operation as not processed only when it certainly never
//! reached the processor (a refund then releases its amount), and holds it
//! for an operator otherwise.

use common::db::lifecycle::{Audit, Knowledge};
use common::db::operations::{self, OperationRow};
use common::db::payments;
use common::domain::failure_codes;
use common::domain::{Kind, OperationId, OperationStatus};
use common::processor::{
    CaptureRequest, RefundRequest, VoidRequest, CHARGE_NOT_CAPTURABLE_CODE,
    CHARGE_NOT_VOIDABLE_CODE,
};
use common::queue::Job;
use lapin::types::FieldTable;
use std::time::Duration;

use crate::context::Context;
use crate::engine::{self, Change, StepError, Work};
use crate::processor::{Capture, Operation, Outcome, Refund, Void};

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

/// Whether a refusal of a capture or void says the processor no longer
/// holds the authorization at all (it was voided or expired there): the
/// payment can never be captured or voided again, so it becomes `cancelled`
/// rather than staying capturable (and the rescuer voiding it forever). A
/// refusal about the amount (`amount_exceeds_capturable`) leaves the
/// authorization as it is.
///
/// Read as "released" because nothing in this system can have captured it:
/// at most one capture or void is open per payment, and an unknown outcome
/// is settled with the processor before it is recorded. A charge captured
/// outside this system (a processor's dashboard) would be refused the same
/// way; the processor's own message, kept as `last_operation_error`, says
/// which state it found.
fn authorization_released(kind: Kind, code: &str) -> bool {
    match kind {
        Kind::Capture => code == CHARGE_NOT_CAPTURABLE_CODE,
        Kind::Void => code == CHARGE_NOT_VOIDABLE_CODE,
        Kind::Refund => false,
    }
}

/// The processor's idempotency key of an operation: stable across every
/// attempt and worker.
pub fn idempotency_key(op: &OperationRow) -> String {
    format!("{}_{}", op.kind().as_str(), op.id)
}

pub(crate) async fn process(
    ctx: &Context,
    job: &Job,
    operation_id: OperationId,
    props: Option<&FieldTable>,
) -> Result<(), StepError> {
    let claimed = engine::claim_or_settle(
        ctx,
        job,
        props,
        || operations::find(&ctx.pool, operation_id),
        || {
            let audit = Audit {
                actor: &ctx.worker_id,
                reason: "claimed",
            };
            let (lease, dead_after) = (ctx.settings.lease, ctx.settings.dead_after);
            ctx.db(move || operations::claim(&ctx.pool, operation_id, lease, dead_after, audit))
        },
    )
    .await?;
    let Some(op) = claimed else {
        return Ok(());
    };
    let payment = ctx
        .db(|| payments::find(&ctx.pool, job.payment_id()))
        .await?;
    let charge_id = payment
        .as_ref()
        .and_then(|p| p.processor_response.as_ref())
        .and_then(|r| r.0.charge_id.clone());
    let Some(charge_id) = charge_id else {
        // An operation is only created on a payment the processor charged;
        // without its charge id nothing can be asked: hold it, loudly.
        let reason = "the payment has no processor charge id";
        return engine::hold(ctx, job, &op, reason).await;
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
                    statement_descriptor: op.statement_descriptor.clone(),
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
                payment_id: job.payment_id().to_string(),
                request: RefundRequest {
                    charge: charge_id,
                    amount: op.amount,
                    reference: common::domain::RefundId::from(op.id).to_string(),
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
            op.finished(ctx, row.is_some(), "succeeded");
        }
        Settled::Failed { code, message } => {
            let released = authorization_released(op.kind(), &code);
            let audit = Audit {
                actor: &ctx.worker_id,
                reason: "processor refused",
            };
            let row = ctx
                .db(|| operations::fail(&ctx.pool, &op, &code, &message, released, audit))
                .await?;
            op.finished(ctx, row.is_some(), "failed");
        }
        Settled::Rejected(reason) => engine::hold(ctx, job, &op, &reason).await?,
        Settled::Transient { reason, knowledge } => {
            engine::retry_or_give_up(ctx, job, &op, &reason, knowledge).await?;
        }
    }
    Ok(())
}

impl Work for OperationRow {
    fn noun(&self) -> &'static str {
        self.kind().as_str()
    }
    fn call(&self) -> &'static str {
        self.kind().as_str()
    }
    fn attempts_this_round(&self) -> i32 {
        OperationRow::attempts_this_round(self)
    }
    fn is_processing(&self) -> bool {
        self.status == OperationStatus::Processing
    }

    async fn apply(
        &self,
        pool: &sqlx::PgPool,
        change: &Change<'_>,
        dead_after: Duration,
        audit: Audit<'_>,
    ) -> sqlx::Result<bool> {
        let row = match *change {
            Change::Retry(retry) => operations::schedule_retry(pool, self, &retry, audit).await?,
            Change::FailNotProcessed { code, message } => {
                operations::fail(pool, self, code, message, false, audit).await?
            }
            Change::Hold { last_error } => operations::hold(pool, self, last_error, audit).await?,
            Change::FailUnclaimed { message } => {
                let code = failure_codes::NOT_PROCESSED;
                operations::fail_unclaimed(pool, self.id, code, message, audit).await?
            }
            Change::HoldUnclaimed { last_error } => {
                operations::hold_unclaimed(pool, self.id, last_error, dead_after, audit).await?
            }
        };
        Ok(row.is_some())
    }

    fn finished(&self, _: &Context, recorded: bool, outcome: &'static str) {
        if recorded {
            tracing::info!(operation_id = %self.id, kind = self.kind().as_str(), outcome, "operation finished");
        } else {
            tracing::warn!(operation_id = %self.id, "lost the claim before recording; its result stands");
        }
    }
}
