//! Getting accepted payments onto the queue: the fast path right after the
//! commit, and the relay that publishes whatever the fast path missed.
//!
//! The outbox row is written in the payment's own transaction, so a payment
//! can never be accepted without its message eventually being published. A
//! message may be published twice (the fast path and the relay racing, or a
//! crash between the confirm and the delete); the worker's guarded claim
//! makes that harmless.

use std::sync::Arc;
use std::time::Duration;

use common::db;
use common::queue::{Broker, Job};
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Outbox rows of confirmed messages go to a background task that deletes
/// them in batches, so the request path pays no extra round trip for it.
const DELETE_BATCH: usize = 500;
/// Rows the relay publishes per transaction.
const RELAY_BATCH: i64 = 200;

#[derive(Debug, Clone)]
pub struct Outbox {
    confirmed: mpsc::UnboundedSender<i64>,
    relay_wake: Arc<Notify>,
}

impl Outbox {
    /// Starts the deleter and the relay; both stop when `shutdown` fires
    /// (the deleter after draining what it was given).
    pub fn start(
        pool: PgPool,
        broker: Arc<Broker>,
        relay_interval: Duration,
        shutdown: CancellationToken,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (confirmed, rx) = mpsc::unbounded_channel();
        let relay_wake = Arc::new(Notify::new());
        let deleter = tokio::spawn(delete_confirmed(pool.clone(), rx));
        let relay = tokio::spawn(relay(
            pool,
            broker,
            relay_interval,
            relay_wake.clone(),
            shutdown,
        ));
        (
            Self {
                confirmed,
                relay_wake,
            },
            vec![deleter, relay],
        )
    }

    /// Publishes a just-committed payment's message. On failure the row stays
    /// for the relay, and the request still succeeds: the payment is safe in
    /// the database.
    pub async fn publish_now(&self, broker: &Broker, job: &Job, outbox_id: i64) {
        match broker.publish_job(job).await {
            Ok(()) => {
                // Only fails when the deleter is gone (shutdown): the relay
                // republishes the row later, which is harmless.
                let _ = self.confirmed.send(outbox_id);
            }
            Err(err) => {
                tracing::warn!(payment_id = %job.payment_id(), error = %err,
                    "publish failed; the outbox relay will retry");
                self.relay_wake.notify_one();
            }
        }
    }
}

async fn delete_confirmed(pool: PgPool, mut rx: mpsc::UnboundedReceiver<i64>) {
    let mut batch = Vec::with_capacity(DELETE_BATCH);
    while rx.recv_many(&mut batch, DELETE_BATCH).await > 0 {
        if let Err(err) = db::outbox::delete(&pool, &batch).await {
            // The rows stay and the relay publishes them again: a duplicate
            // message, never a lost one.
            tracing::warn!(error = %err, rows = batch.len(), "could not delete published outbox rows");
        }
        batch.clear();
    }
}

async fn relay(
    pool: PgPool,
    broker: Arc<Broker>,
    interval: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {
                // Give the broker a moment; the fast path failed just now.
                tokio::time::sleep(interval / 4).await;
            }
        }
        match relay_once(&pool, &broker).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(published = n, "outbox relay published missed messages"),
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "outbox relay failed; will retry"
            ),
        }
    }
}

/// Publishes every due outbox row; returns how many.
pub async fn relay_once(pool: &PgPool, broker: &Broker) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows = db::outbox::lock_due(&mut tx, RELAY_BATCH).await?;
        if rows.is_empty() {
            return Ok(total);
        }
        let mut published = Vec::with_capacity(rows.len());
        for row in &rows {
            let result = broker.publish_job(&row.message.0).await;
            match result {
                Ok(()) => published.push(row.id),
                Err(err) => {
                    db::outbox::delete(&mut *tx, &published).await?;
                    tx.commit().await?;
                    return Err(anyhow::Error::new(err).context("publishing from the outbox"));
                }
            }
        }
        db::outbox::delete(&mut *tx, &published).await?;
        tx.commit().await?;
        total += published.len();
    }
}
