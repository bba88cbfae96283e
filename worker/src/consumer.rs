//! The consume loop around the step function: prefetch, bounded concurrency,
//! ack after commit, reconnect with backoff, graceful drain.
//!
//! Sizing. `WORKER_CONCURRENCY` is at once the prefetch and the number of
//! steps running, so every message the broker has handed this process is
//! one a step is working on: none waits in a local buffer, and a saturated
//! worker leaves the rest of the queue to the others (no hoarding under
//! competing consumers). A step waiting on the card processor holds no
//! database connection (it takes one from the pool per statement), so the
//! limit can be in the hundreds or thousands while the pool stays small.
//! Each message is acked on its own, right after its commit: steps finish in
//! any order, and a cumulative (`multiple`) ack would also ack messages
//! still in progress.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::error::StepError;
use crate::jobs;
use crate::webhooks;

/// What a consumer's messages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Charges and operations (`jobs::handle`).
    Payments,
    /// Webhook deliveries (`webhooks::handle`).
    Webhooks,
}

/// Consumes payment jobs until shutdown, then stops taking messages, lets
/// in-flight ones finish (bounded by `SHUTDOWN_TIMEOUT`) and returns.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    consume(ctx.clone(), Work::Payments).await
}

/// Consumes webhook deliveries the same way, on their own broker
/// connection and with their own concurrency (`WEBHOOK_CONCURRENCY`).
pub async fn run_webhooks(ctx: Arc<Context>) -> anyhow::Result<()> {
    consume(ctx.clone(), Work::Webhooks).await
}

async fn consume(ctx: Arc<Context>, work: Work) -> anyhow::Result<()> {
    let tracker = TaskTracker::new();
    let (broker, concurrency, tag) = match work {
        Work::Payments => (
            ctx.broker.clone(),
            ctx.settings.concurrency,
            ctx.worker_id.clone(),
        ),
        Work::Webhooks => (
            ctx.webhooks.broker.clone(),
            ctx.settings.webhook_concurrency,
            format!("{}:webhooks", ctx.worker_id),
        ),
    };
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let mut backoff = Backoff::default();
    let queue = broker.topology().process_queue();
    while !ctx.shutdown.is_cancelled() {
        let channel = match broker.open_channel().await {
            Ok(channel) => channel,
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), "broker unavailable; retrying");
                backoff.wait(&ctx).await;
                continue;
            }
        };
        // Prefetch = concurrency: the broker never hands this process more
        // unacked messages than it works on at once, so the rest stay in the
        // queue for other workers (fair dispatch under competing consumers).
        let setup = async {
            channel
                // Per consumer (not global): this channel has one consumer.
                .basic_qos(concurrency, BasicQosOptions { global: false })
                .await?;
            channel
                .basic_consume(
                    &queue,
                    &tag,
                    // Manual acks (no_ack = false): a message is removed only
                    // after its outcome is committed. Not exclusive: any
                    // number of workers share the queue.
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        let mut consumer = match setup.await {
            Ok(consumer) => consumer,
            Err(err) => {
                tracing::warn!(error = %err, "cannot start consuming; retrying");
                broker.invalidate();
                backoff.wait(&ctx).await;
                continue;
            }
        };
        tracing::info!(queue = %queue, concurrency, "consuming");
        backoff.reset();
        loop {
            // Wait for a free slot first, so a saturated worker stops pulling
            // messages off the stream.
            let permit = tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let next = tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let ctx = ctx.clone();
                    tracker.spawn(async move {
                        process(&ctx, work, delivery).await;
                        drop(permit);
                    });
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "consumer failed; reconnecting");
                    broker.invalidate();
                    break;
                }
                None => {
                    tracing::warn!("consumer cancelled by the broker; reconnecting");
                    break;
                }
            }
        }
        if ctx.shutdown.is_cancelled() {
            // Stop deliveries; messages prefetched but not started go back to
            // the queue when the channel closes.
            let _ = channel
                .basic_cancel(&tag, BasicCancelOptions::default())
                .await;
            drain(&ctx, &tracker).await;
            let _ = channel.close(200, "worker shutting down").await;
            return Ok(());
        }
        backoff.wait(&ctx).await;
    }
    drain(&ctx, &tracker).await;
    Ok(())
}

async fn drain(ctx: &Context, tracker: &TaskTracker) {
    tracker.close();
    let in_flight = tracker.len();
    if in_flight > 0 {
        tracing::info!(in_flight, "finishing in-flight payments before exit");
    }
    if tokio::time::timeout(ctx.settings.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight payments did not finish within SHUTDOWN_TIMEOUT; they will be redelivered"
        );
    }
}

/// Runs the step and settles the message: ack after success; after a broker
/// failure, requeue it (it is retried, and the delivery count it gains is
/// what eventually marks a message that can never be handled).
async fn process(ctx: &Context, work: Work, delivery: Delivery) {
    let result = match work {
        Work::Payments => {
            ctx.metrics.in_flight.inc();
            let result =
                jobs::handle(ctx, &delivery.data, delivery.properties.headers().as_ref()).await;
            ctx.metrics.in_flight.dec();
            result
        }
        Work::Webhooks => webhooks::handle(ctx, &delivery.data).await,
    };
    match result {
        Ok(()) => {
            if let Err(err) = delivery.ack(BasicAckOptions::default()).await {
                // The channel died after the commit: the message is
                // redelivered, finds the payment terminal and is dropped.
                tracing::warn!(error = %err, "ack failed; the message will be redelivered harmlessly");
            }
        }
        Err(StepError::Interrupted) => {
            // Shutting down mid-step: leave it unacked; the broker hands it
            // to another worker when this channel closes.
        }
        Err(err) => {
            tracing::warn!(error = %err, "step failed; requeueing the message");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

/// Reconnect delays, restarted after every successful connection.
struct Backoff(Box<dyn Iterator<Item = Duration> + Send>);

impl Default for Backoff {
    fn default() -> Self {
        Self(Box::new(common::retry::reconnect_delays()))
    }
}

impl Backoff {
    fn reset(&mut self) {
        *self = Self::default();
    }

    async fn wait(&mut self, ctx: &Context) {
        let delay = self.0.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = ctx.shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}
