//! Delivering webhook events (DESIGN.md §10): one attempt per message from
//! the webhook queue, signed with the Standard Webhooks scheme.
//!
//! Deliveries have their own queue, delay tiers and dead letters
//! (`Topology::webhooks`), their own connection to the broker and their own
//! concurrency (`WEBHOOK_CONCURRENCY`), so a slow or hanging receiver never
//! holds a payment slot. The delivery row is the truth: a claim with a
//! deadline makes one worker send at a time, every attempt is recorded with
//! its consequence in one statement, and the rescuer publishes a delivery
//! whose message was lost. Delivery is at least once: a worker killed after
//! the receiver answered but before the record sends the event again, with
//! the same `webhook-id`, which receivers use to drop repeats.
//!
//! Safety: the receiver's URL came from a client. Unless
//! `WEBHOOK_ALLOW_PRIVATE`, the client refuses to connect to any address that
//! is not public, checked by its own resolver on the addresses it then
//! connects to (so DNS rebinding cannot slip through), and a literal address
//! is checked before sending; redirects are not followed, no proxy is used,
//! the attempt is bounded by `WEBHOOK_TIMEOUT_MS`, and at most
//! [`crate::deliverer::MAX_ANSWER_BYTES`] of the answer are read and none of it kept or
//! logged: only its status.

use std::time::{Duration, Instant};

use common::db::webhooks::{self as db, Attempt, Claim, Next};
use common::domain::EventId;
use common::queue::{RetryTiers, Topology};
use common::webhooks::{AttemptOutcome, DeliveryJob};
use lapin::types::FieldTable;

use crate::context::Context;
use crate::error::StepError;

/// Deliveries the rescuer publishes again per pass.
const RESCUE_BATCH: i64 = 500;

/// Handles one message of the webhook queue. `Ok` acks it: done, retried
/// through a delay tier, dead-lettered, or nothing to do.
pub async fn handle(ctx: &Context, data: &[u8]) -> Result<(), StepError> {
    let job = match DeliveryJob::from_bytes(data) {
        Ok(job) => job,
        Err(err) => {
            tracing::error!(error = %err, "undecodable webhook message; dropping it");
            return Ok(());
        }
    };
    let hooks = &ctx.webhooks;
    let id = job.delivery_id();
    let grace = ctx.settings.rescue_after;
    let work = match ctx
        .db(|| db::claim_delivery(&ctx.pool, id, hooks.hold(), grace))
        .await?
    {
        Claim::Taken(work) => work,
        Claim::Nothing => return Ok(()),
        Claim::Busy => {
            // Another worker is on it, or died on it (a redelivered
            // message): look again after the first tier, until its claim
            // runs out.
            let tier = hooks.delays.tier(1);
            hooks
                .publish(&RetryTiers::routing_key(tier), &job, Some(tier))
                .await;
            return Ok(());
        }
    };
    if !work.endpoint_enabled {
        let attempt = Attempt {
            outcome: AttemptOutcome::EndpointDisabled,
            status_code: None,
            error: Some("the endpoint is disabled; nothing was sent"),
            duration: Duration::ZERO,
        };
        ctx.db(|| db::record_attempt(&ctx.pool, &work, &attempt, Next::Drop, grace))
            .await?;
        return Ok(());
    }
    let started = Instant::now();
    let (outcome, status_code, error) = hooks.send(&work).await;
    let took = started.elapsed();
    let attempts = usize::try_from(work.attempt).unwrap_or(usize::MAX);
    let next = match outcome {
        AttemptOutcome::Delivered => Next::Delivered,
        AttemptOutcome::Gone => Next::Disable,
        _ if attempts <= hooks.delays.len() => Next::Retry(hooks.delays.jittered(work.attempt).1),
        _ => Next::Dead,
    };
    let attempt = Attempt {
        outcome,
        status_code,
        error: error.as_deref(),
        duration: took,
    };
    let recorded = ctx
        .db(|| db::record_attempt(&ctx.pool, &work, &attempt, next, grace))
        .await?;
    ctx.metrics.webhook_attempt(outcome.as_str(), took);
    let event_id = EventId(work.event_id);
    tracing::info!(%event_id, delivery_id = %work.id, attempt = work.attempt,
        outcome = outcome.as_str(), status = status_code, "webhook attempt");
    if !recorded {
        // A newer attempt was recorded meanwhile (our claim ran out).
        return Ok(());
    }
    match next {
        Next::Retry(delay) => {
            let tier = hooks.delays.tier(work.attempt);
            hooks
                .publish(&RetryTiers::routing_key(tier), &job, Some(delay))
                .await;
        }
        Next::Dead => {
            tracing::warn!(%event_id, delivery_id = %work.id,
                "webhook delivery out of retries; dead-lettered (POST /v1/events/:id/redeliver sends it again)");
            hooks.publish(Topology::DEAD_KEY, &job, None).await;
        }
        Next::Disable => {
            ctx.metrics.webhook_endpoint_disabled();
            tracing::warn!(endpoint_id = %work.endpoint_id, "endpoint answered 410 Gone; disabled");
        }
        Next::Delivered | Next::Drop => {}
    }
    Ok(())
}

/// Publishes deliveries whose message is late; how many.
pub async fn rescue_once(ctx: &Context) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let overdue = db::take_overdue(&ctx.pool, ctx.settings.rescue_after, RESCUE_BATCH).await?;
        for id in &overdue {
            let job = DeliveryJob::DeliveryV1 { delivery_id: *id };
            ctx.webhooks
                .broker
                .publish(
                    Topology::PROCESS_KEY,
                    &job.to_bytes(),
                    FieldTable::default(),
                    None,
                )
                .await?;
        }
        total += overdue.len();
        if overdue.len() < usize::try_from(RESCUE_BATCH).unwrap_or(0) {
            return Ok(total);
        }
    }
}
