//! The rescuer: no payment stays `pending` or `processing` forever.
//!
//! Every worker runs it; `FOR UPDATE SKIP LOCKED` lets them share the work.
//! It re-enqueues only payments whose message is late (see
//! `payments::take_overdue`): a dead worker's claim the broker did not bring
//! back, a retry whose tier has passed, or a first delivery that is overdue
//! while the queue holds no backlog. A payment merely waiting its turn in a
//! backlog or a retry tier is left alone. A duplicate message is harmless:
//! the claim decides. Each pass also refreshes the reconciliation gauges
//! (payments whose outcome is unknown, and the oldest's age).

use std::sync::Arc;

use common::db::operations::{self, NewOperation};
use common::db::{outbox, payments, workers};
use common::domain::{Kind, OperationId, PaymentId};
use common::queue::Job;

use crate::context::Context;

const BATCH: i64 = 500;

pub async fn run(ctx: Arc<Context>) {
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = tokio::time::sleep(ctx.settings.rescue_interval) => {}
        }
        match rescue_once(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rescued = n, "re-enqueued overdue payments"),
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "rescuer run failed; will retry")
            }
        }
        match crate::webhooks::rescue_once(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rescued = n, "published late webhook deliveries"),
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "webhook rescue failed; will retry"
            ),
        }
        if let Err(err) = observe_unknown_outcomes(&ctx).await {
            tracing::debug!(error = %err, "cannot read the unknown outcomes");
        }
    }
}

/// One pass; returns how many payments and operations were re-enqueued.
pub async fn rescue_once(ctx: &Context) -> anyhow::Result<usize> {
    let backlog = has_backlog(ctx).await;
    let (grace, dead_after) = (ctx.settings.rescue_after, ctx.settings.dead_after);
    let mut total = republish(
        ctx,
        || payments::take_overdue(&ctx.pool, grace, dead_after, backlog, BATCH),
        |payment| {
            let id = PaymentId(payment.id);
            tracing::info!(payment_id = %id, status = %payment.status, "rescuing overdue payment");
            Job::process_payment(id, payment.merchant_id)
        },
    )
    .await?;
    total += republish(
        ctx,
        || operations::take_overdue(&ctx.pool, grace, dead_after, backlog, BATCH),
        |op| {
            tracing::info!(operation_id = %op.id, "rescuing overdue operation");
            Job::operation(op.id, PaymentId(op.payment_id), op.merchant_id)
        },
    )
    .await?;
    total += void_expired_authorizations(ctx).await?;
    workers::forget_dead(&ctx.pool).await?;
    Ok(total)
}

/// Takes overdue rows in batches (`take`) and publishes each one's job
/// (`job_of`) until a batch comes back short. If a publish fails the row is
/// due again after the grace period, and the next pass tries again.
async fn republish<T, Fut>(
    ctx: &Context,
    mut take: impl FnMut() -> Fut,
    mut job_of: impl FnMut(&T) -> Job,
) -> anyhow::Result<usize>
where
    Fut: std::future::Future<Output = sqlx::Result<Vec<T>>>,
{
    let mut total = 0;
    loop {
        let overdue = take().await?;
        for row in &overdue {
            ctx.broker.publish_job(&job_of(row)).await?;
            total += 1;
        }
        if overdue.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Authorizations left uncaptured past `AUTHORIZATION_TTL_HOURS` are voided
/// by the system, through the same operation as a merchant's cancel. The
/// outbox row is written with the operation; it is published here and
/// deleted once confirmed (else an API's relay publishes it).
async fn void_expired_authorizations(ctx: &Context) -> anyhow::Result<usize> {
    let ttl = std::time::Duration::from_secs(ctx.settings.authorization_ttl_hours * 3600);
    let expired = operations::expired_authorizations(&ctx.pool, ttl, BATCH).await?;
    let mut voided = 0;
    for (payment_id, merchant_id) in expired {
        let new = NewOperation {
            id: OperationId::new(),
            payment_id: PaymentId(payment_id),
            merchant_id,
            kind: Kind::Void,
            amount: None,
            requested_by: "system".into(),
            reason: Some("automatic".into()),
            notes: None,
            statement_descriptor: None,
            metadata: serde_json::json!({}),
            origin: Default::default(),
        };
        let Ok(mut tx) = ctx.pool.begin().await else {
            continue;
        };
        // `None` or a unique violation: a capture or void started meanwhile.
        let Ok(Some(created)) = operations::create(&mut tx, &new, ctx.settings.rescue_after).await
        else {
            continue;
        };
        // Unknown whether it committed: the next pass finds the payment
        // still authorized (and voids it) or its void under way (and leaves
        // it); the outbox row of a committed void is published by the API's
        // relay.
        if tx.commit().await.is_err() {
            continue;
        }
        tracing::info!(payment_id = %PaymentId(payment_id), "authorization expired; voiding it");
        let job = Job::operation(created.operation.id, PaymentId(payment_id), merchant_id);
        ctx.broker.publish_job(&job).await?;
        outbox::delete(&ctx.pool, &[created.outbox_id]).await?;
        voided += 1;
    }
    Ok(voided)
}

/// Whether the main queue holds messages ready for delivery. When it cannot
/// be read, assume it does: a payment is never re-sent on a guess.
async fn has_backlog(ctx: &Context) -> bool {
    let queue = ctx.broker.topology().process_queue();
    ctx.broker
        .queue_depths()
        .await
        .into_iter()
        .find(|(name, _)| *name == queue)
        .is_none_or(|(_, ready)| ready > 0)
}

async fn observe_unknown_outcomes(ctx: &Context) -> sqlx::Result<()> {
    let (count, oldest) = payments::unknown_outcomes(&ctx.pool).await?;
    ctx.metrics.unknown_outcomes.set(count);
    ctx.metrics.oldest_unknown_outcome_seconds.set(oldest);
    Ok(())
}
