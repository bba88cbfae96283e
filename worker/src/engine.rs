//! The job engine: what every job of the process queue goes through, a
//! payment's charge (`charge.rs`) and an operation (`operations.rs`) alike.
//!
//! claim (guarded update, lease) → the caller calls the processor and
//! records the outcome (guarded by the claim's attempt number) → a retry
//! through a delay tier, a hold for an operator, or a dead letter when
//! needed, here. The consumer acks only after the job returns `Ok`, i.e.
//! after every write it implies has committed. Each step is safe to run twice
//! for the same message: the database decides what happens, never the
//! message. The engine knows its two users only through [`Work`].

use std::future::Future;
use std::time::Duration;

use common::db::lifecycle::{Audit, Knowledge, Retry};
use common::dead_letters::DeadLetterReason;
use common::domain::failure_codes;
use common::queue::{headers, Job, RetryTiers, Topology};
use lapin::types::FieldTable;

use crate::context::Context;
pub use crate::error::StepError;

/// A message redelivered this often (workers died holding it) is treated as
/// poison before the broker's own delivery limit takes it away silently.
pub(crate) const POISON_REDELIVERIES: i64 = common::queue::DELIVERY_LIMIT / 2;

/// The message met another worker's live claim (a duplicate, or the
/// broker's redelivery of a worker that died a moment ago and whose
/// heartbeat is still fresh). It is sent again after the first retry tier
/// and acked, never dropped: if that claim ends in success the next delivery
/// finds the payment terminal; if its worker is dead the claim turns void
/// within `WORKER_DEAD_AFTER` and the next delivery takes it over.
pub(crate) async fn defer(ctx: &Context, job: &Job) -> Result<(), StepError> {
    let tier = ctx.settings.retry_delays.tier(1);
    tracing::debug!(payment_id = %job.payment_id(), delay_ms = tier.as_millis() as u64, "claimed by a live worker; deferring the message");
    ctx.broker
        .publish(
            &RetryTiers::routing_key(tier),
            &job.to_bytes(),
            FieldTable::default(),
            Some(tier),
        )
        .await?;
    ctx.metrics.deferred();
    Ok(())
}

/// How every job starts, a payment's or an operation's: a poison message
/// is given up before any claim ([`give_up_unclaimed`]); otherwise the row
/// is claimed under this worker's lease, and a row that cannot be claimed is
/// left to [`not_claimed`]. `None`: the message is settled, there is nothing
/// more to do. `find` reads the row; `claim` runs its guarded claim (waiting
/// out an unavailable database: a payment's goes through the worker's batch
/// of claims, an operation's through [`Context::db`]).
pub(crate) async fn claim_or_settle<W, Find, FindFut, Claim, ClaimFut>(
    ctx: &Context,
    job: &Job,
    props: Option<&FieldTable>,
    mut find: Find,
    claim: Claim,
) -> Result<Option<W>, StepError>
where
    W: Work,
    Find: FnMut() -> FindFut,
    FindFut: Future<Output = sqlx::Result<Option<W>>>,
    Claim: FnOnce() -> ClaimFut,
    ClaimFut: Future<Output = Result<Option<W>, StepError>>,
{
    let noun = job.subject();
    let redeliveries = headers::get_int(props, "x-delivery-count").unwrap_or(0);
    if redeliveries >= POISON_REDELIVERIES {
        let found = match ctx.db(&mut find).await {
            Ok(found) => found,
            // A row the domain rejects (a corrupt status or currency) fails
            // every read: dead-letter the job now, with the error, rather
            // than spin on to the broker's delivery limit. The row is left
            // as it is for an operator to mend, then replay.
            Err(StepError::Database(err)) => {
                tracing::error!(payment_id = %job.payment_id(), operation_id = ?job.operation_id(), error = %err, "the job's {noun} cannot be read; dead-lettering");
                let error = format!(
                    "message redelivered {redeliveries} times; the {noun} cannot be read: {err}"
                );
                publish_dead(ctx, job, DeadLetterReason::RedeliveredTooOften, &error, 0).await?;
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        give_up_unclaimed(ctx, job, redeliveries, found.as_ref()).await?;
        return Ok(None);
    }
    let claimed = claim().await?;
    if claimed.is_none() {
        let found = ctx.db(&mut find).await?;
        not_claimed(ctx, job, found.as_ref()).await?;
    }
    Ok(claimed)
}

/// A message whose payment or operation (`found`, read after the claim
/// failed; `None`: there is none) could not be claimed. Unknown: dead
/// letter. Under another live worker's claim: deferred (see [`defer`]).
/// Terminal, or held for an operator (whose replay sends a new message):
/// this message has nothing left to do.
async fn not_claimed<W: Work>(
    ctx: &Context,
    job: &Job,
    found: Option<&W>,
) -> Result<(), StepError> {
    let noun = job.subject();
    match found {
        None => {
            tracing::warn!(payment_id = %job.payment_id(), operation_id = ?job.operation_id(), "message for an unknown {noun}; dead-lettering it");
            let error = format!("no such {noun}");
            publish_dead(ctx, job, DeadLetterReason::UnknownPayment, &error, 0).await
        }
        Some(work) if work.is_processing() => defer(ctx, job).await,
        Some(_) => {
            tracing::debug!(payment_id = %job.payment_id(), operation_id = ?job.operation_id(), "{noun} not claimable; dropping the message");
            Ok(())
        }
    }
}

/// What a job message drives: a payment (its charge) or an operation
/// (capture, void, refund). Retrying, holding and giving up are one logic
/// for both, in this module; each brings its words and its guarded
/// statements, one per [`Change`].
pub(crate) trait Work: Sync {
    /// What the job is about, in messages: `payment`, `capture`, `refund`…
    fn noun(&self) -> &'static str;
    /// What the processor is asked to do: `charge`, `capture`, `refund`…
    fn call(&self) -> &'static str;
    fn attempts_this_round(&self) -> i32;
    /// Under a claim (this worker's or another's).
    fn is_processing(&self) -> bool;
    /// Makes `change` with its guarded statement; `false`: the guard failed
    /// (the claim was lost meanwhile, or the row is no longer as read).
    async fn apply(
        &self,
        pool: &sqlx::PgPool,
        change: &Change<'_>,
        dead_after: Duration,
        audit: Audit<'_>,
    ) -> sqlx::Result<bool>;
    /// Logs (and counts) that the job finished with `outcome`, or that its
    /// result could not be recorded because the claim was lost.
    fn finished(&self, ctx: &Context, recorded: bool, outcome: &'static str);
}

/// A change of a job's row that the generic logic below decides on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// Under this claim: `processing` → `pending`, retried as it says.
    Retry(Retry<'a>),
    /// Under this claim: `processing` → `failed` as not processed (`code`).
    FailNotProcessed { code: &'a str, message: &'a str },
    /// Under this claim: `processing` → `pending`, held for an operator.
    Hold { last_error: &'a str },
    /// Given up before any claim, known never sent: `pending` → `failed`.
    FailUnclaimed { message: &'a str },
    /// Given up before any claim, maybe sent: held, outcome marked unknown.
    HoldUnclaimed { last_error: &'a str },
}

/// [`Work::apply`] through the database wait of [`Context::db`].
async fn apply<W: Work>(
    ctx: &Context,
    work: &W,
    change: Change<'_>,
    audit: Audit<'_>,
) -> Result<bool, StepError> {
    ctx.db(|| work.apply(&ctx.pool, &change, ctx.settings.dead_after, audit))
        .await
}

/// The processor refused the request itself: a misconfiguration (wrong
/// `PROCESSOR_URL`, bad credentials) that no retry fixes. The job goes to
/// the dead-letter queue with the reason and the payment or operation is
/// held `pending`: nothing happened at the processor that we do not know, so
/// nothing is said that is not true, and `dlq replay` takes it up again once
/// the configuration is fixed.
pub(crate) async fn hold<W: Work>(
    ctx: &Context,
    job: &Job,
    work: &W,
    reason: &str,
) -> Result<(), StepError> {
    tracing::error!(
        payment_id = %job.payment_id(),
        operation_id = ?job.operation_id(),
        error = reason,
        processor = %ctx.processor.location(),
        "the card processor refused our request: check its URL and the credentials; \
         the job is held in the dead-letter queue until `worker dlq replay`"
    );
    publish_dead(
        ctx,
        job,
        DeadLetterReason::ProcessorRejected,
        reason,
        work.attempts_this_round(),
    )
    .await?;
    let message = format!(
        "held for an operator: {reason}; this attempt did nothing at the card processor, and \
         the {} is tried again once the cause is fixed and the job replayed",
        work.noun()
    );
    let audit = Audit {
        actor: &ctx.worker_id,
        reason: "processor rejected the request; held and dead-lettered",
    };
    apply(
        ctx,
        work,
        Change::Hold {
            last_error: &message,
        },
        audit,
    )
    .await?;
    ctx.metrics.held();
    Ok(())
}

/// A transient failure: schedule the next attempt through a delay queue.
/// Only a call known not to have reached the processor counts towards
/// giving up: when `MAX_ATTEMPTS` such attempts are used up the job is
/// dead-lettered and the payment or operation fails as not processed (true,
/// and safe to retry). While the outcome is unknown it is never failed: it
/// is retried on the last tier for as long as it takes, each attempt asking
/// the processor first, until the processor gives a definitive answer.
pub(crate) async fn retry_or_give_up<W: Work>(
    ctx: &Context,
    job: &Job,
    work: &W,
    error: &str,
    knowledge: Knowledge,
) -> Result<(), StepError> {
    let id = job.payment_id();
    let attempts = work.attempts_this_round();
    if attempts >= ctx.settings.max_attempts && knowledge == Knowledge::NotProcessed {
        tracing::warn!(payment_id = %id, operation_id = ?job.operation_id(), attempts, error, "attempts exhausted; dead-lettering");
        // The dead letter first: if we crash after it, the row is still
        // `processing` and is claimed again; the reverse order could leave a
        // failed row with nothing for an operator to replay.
        publish_dead(
            ctx,
            job,
            DeadLetterReason::AttemptsExhausted,
            error,
            attempts,
        )
        .await?;
        let message = format!(
            "The {} was not processed: the card processor could not be reached after \
             {attempts} attempts. It can be retried.",
            work.noun()
        );
        let audit = Audit {
            actor: &ctx.worker_id,
            reason: "attempts exhausted; dead-lettered",
        };
        let change = Change::FailNotProcessed {
            code: failure_codes::PROCESSOR_UNAVAILABLE,
            message: &message,
        };
        let recorded = apply(ctx, work, change, audit).await?;
        work.finished(ctx, recorded, "dead_lettered");
        return Ok(());
    }
    let last_error = match knowledge {
        Knowledge::Unknown => {
            if attempts >= ctx.settings.max_attempts {
                tracing::warn!(payment_id = %id, operation_id = ?job.operation_id(), attempts, error, "attempts used up, but the outcome is unknown: asking the processor until it answers");
            }
            format!("{UNKNOWN_OUTCOME_PREFIX}{error}")
        }
        Knowledge::NotProcessed => error.to_owned(),
    };
    // Jittered inside the tier (the queue's TTL is the upper bound), so
    // retries after an outage do not arrive in one burst.
    let (tier, delay) = ctx.settings.retry_delays.jittered(attempts);
    let audit = Audit {
        actor: &ctx.worker_id,
        reason: match knowledge {
            Knowledge::Unknown => "outcome unknown; confirmation scheduled",
            Knowledge::NotProcessed => "transient processor error; retry scheduled",
        },
    };
    let change = Change::Retry(Retry {
        last_error: &last_error,
        delay,
        tier,
        knowledge,
    });
    if !apply(ctx, work, change, audit).await? {
        return Ok(());
    }
    ctx.metrics.retried();
    tracing::info!(payment_id = %id, operation_id = ?job.operation_id(), attempts, delay_ms = delay.as_millis() as u64, error, "retry scheduled");
    let published = ctx
        .broker
        .publish(
            &RetryTiers::routing_key(tier),
            &job.to_bytes(),
            headers::build(&[(headers::ATTEMPT, headers::int(i64::from(attempts)))]),
            Some(delay),
        )
        .await;
    if let Err(err) = published {
        // The row is `pending` with `next_attempt_at` set: the rescuer
        // re-enqueues it once its tier has passed.
        tracing::warn!(payment_id = %id, operation_id = ?job.operation_id(), error = %err, "could not publish the retry; the rescuer will pick it up");
    }
    Ok(())
}

/// How `last_error` starts while the outcome of the latest processor call is
/// unknown (`processor_response` is `null` then). Documented in the README.
pub const UNKNOWN_OUTCOME_PREFIX: &str =
    "outcome unknown, awaiting confirmation from the card processor: ";

/// A message that keeps killing workers: dead-letter it. Its payment or
/// operation (`work`, as read before any claim; `None` if there is none)
/// fails as not processed only when it certainly never reached the processor
/// (`pending`, not held, no unknown outcome; a refund then releases its
/// amount); otherwise (a worker died mid-call, or an earlier outcome is
/// unknown) it is held for an operator, its outcome marked unknown, and a
/// replay asks the processor first. Under another live worker's claim it is
/// left to that worker.
async fn give_up_unclaimed<W: Work>(
    ctx: &Context,
    job: &Job,
    redeliveries: i64,
    work: Option<&W>,
) -> Result<(), StepError> {
    let error = format!("message redelivered {redeliveries} times");
    tracing::warn!(payment_id = %job.payment_id(), operation_id = ?job.operation_id(), redeliveries, "poison message; dead-lettering");
    publish_dead(ctx, job, DeadLetterReason::RedeliveredTooOften, &error, 0).await?;
    let Some(work) = work else {
        return Ok(());
    };
    let message = format!(
        "The {} was not processed: its job failed repeatedly. It can be retried.",
        work.noun()
    );
    let audit = Audit {
        actor: &ctx.worker_id,
        reason: "poison message; dead-lettered",
    };
    if apply(
        ctx,
        work,
        Change::FailUnclaimed { message: &message },
        audit,
    )
    .await?
    {
        return Ok(());
    }
    let message = format!(
        "held for an operator: {error}; the {} may have been sent, so its outcome is \
         unknown until a replay asks the card processor",
        work.call()
    );
    let audit = Audit {
        actor: &ctx.worker_id,
        reason: "poison message with an unknown outcome; held and dead-lettered",
    };
    let change = Change::HoldUnclaimed {
        last_error: &message,
    };
    if apply(ctx, work, change, audit).await? {
        ctx.metrics.held();
    }
    Ok(())
}

pub(crate) async fn publish_dead(
    ctx: &Context,
    job: &Job,
    reason: DeadLetterReason,
    error: &str,
    attempts: i32,
) -> Result<(), StepError> {
    dead_letter_raw(ctx, &job.to_bytes(), reason, error, attempts).await
}

/// Publishes `body` to the dead-letter queue with the reason headers.
pub(crate) async fn dead_letter_raw(
    ctx: &Context,
    body: &[u8],
    reason: DeadLetterReason,
    error: &str,
    attempts: i32,
) -> Result<(), StepError> {
    let table = headers::build(&[
        (headers::DEAD_REASON, headers::string(reason.as_str())),
        (headers::LAST_ERROR, headers::string(truncate(error, 500))),
        (headers::ATTEMPT, headers::int(i64::from(attempts))),
        (
            headers::DEAD_AT,
            headers::string(chrono::Utc::now().to_rfc3339()),
        ),
    ]);
    ctx.broker
        .publish(Topology::DEAD_KEY, body, table, None)
        .await?;
    ctx.metrics.dead_lettered();
    Ok(())
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
