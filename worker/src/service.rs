//! Starting the worker: [`connect`] to the database and the broker, then
//! [`run`] its parts (the consumers, the rescuer, the heartbeat, the
//! health and metrics server) until shutdown.

use std::sync::Arc;

use anyhow::Context as _;
use common::config::{BrokerArgs, DatabaseArgs};
use common::queue::{Broker, Topology};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::context::Context;
use crate::{consumer, heartbeat, http, rescuer};

/// Connects to the database (migrating it) and the broker, declaring the
/// topology including the retry tiers.
pub async fn connect(
    database: &DatabaseArgs,
    amqp: &BrokerArgs,
    settings: &Settings,
) -> anyhow::Result<(PgPool, Arc<Broker>)> {
    let pool = common::db::connect(database).await?;
    common::db::migrate(&pool).await?;
    let topology = Topology::new(&amqp.queue_prefix).with_retry_delays(&settings.retry_delays);
    let broker = Broker::connect(&amqp.amqp_url, topology)
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
