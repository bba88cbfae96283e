//! What every in-flight step shares: the pools, the brokers, the processor
//! and webhook clients, the settings and metrics, and the one way a step
//! talks to the database ([`Context::db`]).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;

use common::queue::{Broker, Topology};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::batch::{Approvals, Batch, Claims, Database};
use crate::config::Settings;
use crate::deliverer::Deliverer;
use crate::error::StepError;
use crate::metrics::Metrics;
use crate::processor::Processor;

/// What a step needs; shared by all in-flight steps.
pub struct Context {
    /// Short statements of every step (claim, record), never held across
    /// a processor call.
    pub pool: PgPool,
    /// One connection of its own for the heartbeat (and `/readyz`), so that
    /// proving the worker alive never queues behind hundreds of payments
    /// waiting for `pool`: a late heartbeat would let other workers void our
    /// claims, a slow `/readyz` would call a busy worker unready.
    pub heartbeat_pool: PgPool,
    pub broker: Arc<Broker>,
    pub processor: Processor,
    pub settings: Settings,
    /// Webhook deliveries: their broker handle and HTTP client.
    pub webhooks: Deliverer,
    pub worker_id: String,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
    /// Claims of payments, many in one statement (`batch.rs`).
    pub(crate) claims: Batch<Claims>,
    /// Approved charges recorded, many in one statement.
    pub(crate) approvals: Batch<Approvals>,
    /// Turns at the database: as many as `pool` has connections. Hundreds
    /// of steps may want a statement at once; they wait here, in order and
    /// without a deadline, so the pool's short acquire timeout keeps meaning
    /// "the database is unavailable" and never "busy, wait your turn" (which
    /// would send a step into the outage backoff while connections idle).
    db_turns: Arc<Semaphore>,
}

impl Context {
    pub fn new(
        pool: PgPool,
        broker: Arc<Broker>,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let pool_turns = usize::try_from(pool.options().get_max_connections())
            .unwrap_or(1)
            .max(1);
        let processor = Processor::new(&settings)?;
        let db_turns = Arc::new(Semaphore::new(pool_turns));
        let worker_id = format!(
            "worker:{}:{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into()),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let database = Database {
            pool: pool.clone(),
            turns: db_turns.clone(),
            shutdown: shutdown.clone(),
        };
        let claims = Batch::start(
            Claims {
                lease: settings.lease,
                dead_after: settings.dead_after,
                worker_id: worker_id.clone(),
            },
            database.clone(),
        );
        let approvals = Batch::start(
            Approvals {
                worker_id: worker_id.clone(),
            },
            database,
        );
        let webhook_topology = Topology::webhooks(broker.topology().prefix())
            .with_retry_delays(&settings.webhook_retry_delays);
        let webhooks = Deliverer::new(
            Arc::new(broker.sibling(webhook_topology)),
            settings.webhook_timeout,
            settings.webhook_retry_delays.clone(),
            settings.webhook_allow_private,
            settings.secrets_key.clone().context(
                "SECRETS_KEY is not set: the worker opens webhook signing secrets with it \
                 (the API's value)",
            )?,
        )?;
        Ok(Self {
            webhooks,
            heartbeat_pool: common::db::dedicated_connection(&pool),
            pool,
            broker,
            processor,
            settings,
            worker_id,
            metrics: Metrics::default(),
            shutdown,
            claims,
            approvals,
            db_turns,
        })
    }

    /// Runs a database operation, waiting out an unavailable database (with
    /// backoff) instead of failing the message: while the database is down
    /// every slot ends up waiting here, so the worker stops taking messages,
    /// and resumes where it was when the database is back. Each try waits
    /// for its turn at the database first (one per pooled connection).
    pub async fn db<T, F, Fut>(&self, op: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        crate::batch::waiting_out(&self.db_turns, &self.shutdown, op).await
    }
}
