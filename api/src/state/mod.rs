//! What every handler shares: [`AppState`], and the parts it is made of
//! (the outbox handle, the waiters of `Prefer: wait`, the metrics).

pub mod limiter;
pub mod metrics;
pub mod outbox;
pub mod waiters;

use std::sync::Arc;

use common::queue::Broker;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;
use outbox::Outbox;
use waiters::Waiters;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub broker: Arc<Broker>,
    pub settings: Arc<ServeArgs>,
    pub metrics: Arc<metrics::Metrics>,
    /// The webhook queues (a connection of their own, opened on first use).
    pub webhook_broker: Arc<Broker>,
    pub limiter: Arc<limiter::Limiter>,
    /// The OpenAPI document, as served (`crate::openapi::json`, built at
    /// start).
    pub openapi: Arc<str>,
    /// The console's sign-in attempts ([`limiter::SignIns`]).
    pub sign_ins: Arc<limiter::SignIns>,
    /// Seals webhook signing secrets before they are stored.
    pub secrets: Arc<common::secret::SecretsKeys>,
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) outbox: Outbox,
    pub(crate) shutdown: CancellationToken,
}
