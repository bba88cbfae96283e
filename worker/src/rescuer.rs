//! The rescuer: no payment stays `pending` or `processing` forever.
//!
//! Every worker runs it; `FOR UPDATE SKIP LOCKED` lets them share the work.
//! A payment overdue by more than `RESCUE_AFTER` (its message was lost, its
//! retry never published, or its worker died holding the lease) is
//! re-enqueued. A duplicate message is harmless: the claim decides.

use std::sync::Arc;

use common::db::payments;
use common::domain::PaymentId;
use common::queue::Job;

use crate::Context;

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
    }
}

/// One pass; returns how many payments were re-enqueued.
pub async fn rescue_once(ctx: &Context) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let overdue = payments::take_overdue(&ctx.pool, ctx.settings.rescue_after, BATCH).await?;
        let n = overdue.len();
        for payment in overdue {
            let id = PaymentId(payment.id);
            tracing::info!(payment_id = %id, status = %payment.status, "rescuing overdue payment");
            // If this publish fails the payment is due again after the grace
            // period, and the next pass tries again.
            ctx.broker
                .publish_job(&Job::process_payment(id, payment.merchant_id))
                .await?;
            total += 1;
        }
        if n < BATCH as usize {
            return Ok(total);
        }
    }
}
