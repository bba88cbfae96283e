//! The payment worker: consumes jobs from RabbitMQ, claims each payment with a
//! lease, calls the card processor with the payment id as idempotency key,
//! records the outcome, and acks only after the commit; delivers webhook
//! events on their own queue (`webhooks`). Also the operator's dead-letter
//! tooling (`worker dlq …`). Settings are in `config`, what every step
//! shares in `context`.
//!
//! Scale by starting more processes: they compete for one queue with no
//! coordination beyond the database's guarded updates.

mod batch;
mod charge;
pub mod cli;
mod config;
pub mod consumer;
mod context;
pub mod engine;
mod heartbeat;
mod http;
pub mod jobs;
pub mod metrics;
pub mod operations;
pub mod processor;
pub mod rescuer;
pub mod webhooks;

use std::sync::Arc;

use anyhow::Context as _;
use common::queue::{Broker, Topology};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::{
    Config, ProcessorKind, SecretKey, Settings, StripeArgs, DEFAULT_CONCURRENCY,
    DEFAULT_DATABASE_CONNECTIONS, MAX_CONCURRENCY,
};
pub use crate::context::Context;

/// Connects to the database (migrating it) and the broker, declaring the
/// topology including the retry tiers.
pub async fn connect(config: &Config) -> anyhow::Result<(PgPool, Arc<Broker>)> {
    let pool = common::db::connect(&config.database).await?;
    common::db::migrate(&pool).await?;
    let topology =
        Topology::new(&config.broker.queue_prefix).with_retry_delays(&config.settings.retry_delays);
    let broker = Broker::connect(&config.broker.amqp_url, topology)
        .await
        .context("connecting to RabbitMQ (AMQP_URL)")?;
    Ok((pool, Arc::new(broker)))
}

/// Runs the worker until `shutdown`: the consumer, the rescuer and the
/// health/metrics server on `metrics_listener`.
pub async fn run(
    pool: PgPool,
    broker: Arc<Broker>,
    settings: Settings,
    metrics_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(pool, broker.clone(), settings, shutdown)?);
    tracing::info!(worker_id = %ctx.worker_id, "worker starting");
    // Alive before taking any claim, so no claim of ours ever looks void.
    ctx.db(|| common::db::workers::heartbeat(&ctx.pool, &ctx.worker_id))
        .await
        .context("registering the worker")?;
    let stop_beating = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat::run(ctx.clone(), stop_beating.clone()));
    let http = tokio::spawn(http::serve(metrics_listener, ctx.clone()));
    let rescuer = tokio::spawn(rescuer::run(ctx.clone()));
    let (result, webhooks) = tokio::join!(
        consumer::run(ctx.clone()),
        consumer::run_webhooks(ctx.clone())
    );
    let result = result.and(webhooks);
    let _ = rescuer.await;
    // In-flight work is drained (or given up): stop proving liveness and
    // retire, so anything still claimed by us is void at once.
    stop_beating.cancel();
    let _ = heartbeat.await;
    if let Err(err) = common::db::workers::retire(&ctx.pool, &ctx.worker_id).await {
        tracing::warn!(error = %err, "could not retire the worker row; its claims turn void after WORKER_DEAD_AFTER");
    }
    if let Ok(Err(err)) = http.await {
        tracing::warn!(error = %err, "metrics server failed");
    }
    broker.close().await;
    ctx.webhooks.broker.close().await;
    tracing::info!("worker stopped");
    result
}
