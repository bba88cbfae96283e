//! The event relay (renders new events once and publishes their
//! deliveries) and the pruner of events past their retention.

use std::sync::Arc;
use std::time::Duration;

use common::db::webhooks::{self as db};
use common::domain::EventId;
use common::queue::Broker;
use common::webhooks::DeliveryJob;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;

/// Events the relay renders per transaction.
const RELAY_BATCH: i64 = 100;
/// How often the relay looks for new events.
const RELAY_INTERVAL: Duration = Duration::from_millis(200);
/// Publishes deliveries to the webhook queue. A failed publish is only
/// logged: the worker's rescuer publishes late deliveries.
pub(super) async fn publish(broker: &Broker, deliveries: &[Uuid]) {
    for id in deliveries {
        let job = DeliveryJob::DeliveryV1 { delivery_id: *id };
        if let Err(err) = broker
            .publish(
                common::queue::Topology::PROCESS_KEY,
                &job.to_bytes(),
                Default::default(),
                None,
            )
            .await
        {
            tracing::warn!(delivery_id = %id, error = %err,
                "publishing a webhook delivery failed; the worker's rescuer will");
            return;
        }
    }
}

/// How often each API process prunes events past their retention.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Events pruned per statement.
const PRUNE_BATCH: i64 = 1000;

/// Prunes events (with their deliveries and attempts) older than `days`:
/// once at start, then every [`PRUNE_INTERVAL`], in batches until a batch
/// comes back short. Every API process runs it; `SKIP LOCKED` lets them
/// share the work.
pub async fn pruner(pool: PgPool, days: u32, shutdown: CancellationToken) {
    loop {
        let mut pruned = 0;
        loop {
            match db::prune_events(&pool, days, PRUNE_BATCH).await {
                Ok(n) => {
                    pruned += n;
                    if n < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "pruning old events failed; will retry");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, days, "pruned events past their retention");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// Renders new events and publishes their deliveries until `shutdown`.
pub async fn relay(
    pool: PgPool,
    broker: Arc<Broker>,
    base_url: String,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RELAY_INTERVAL) => {}
        }
        if let Err(err) = relay_once(&pool, &broker, &base_url).await {
            tracing::warn!(error = format!("{err:#}"), "event relay failed; will retry");
        }
    }
}

/// Renders and dispatches every waiting event; returns how many. An event
/// whose snapshot cannot be rendered (a bug) is logged and left for a fixed
/// release; the others go on.
pub async fn relay_once(pool: &PgPool, broker: &Broker, base_url: &str) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let events = db::lock_undispatched(&mut tx, RELAY_BATCH).await?;
        let mut deliveries = Vec::new();
        let mut dispatched = 0;
        for event in &events {
            match render(event, base_url) {
                Ok(body) => {
                    deliveries.extend(db::dispatch(&mut *tx, event.id, &body).await?);
                    dispatched += 1;
                }
                Err(err) => {
                    tracing::error!(event_id = %EventId(event.id), error = format!("{err:#}"),
                    "cannot render an event; it waits for a fixed release")
                }
            }
        }
        tx.commit().await?;
        publish(broker, &deliveries).await;
        total += dispatched;
        if dispatched == 0 || events.len() < usize::try_from(RELAY_BATCH).unwrap_or(0) {
            return Ok(total);
        }
    }
}
