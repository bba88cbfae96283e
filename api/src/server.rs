//! Starting the API: [`connect`] to the database and the broker, then
//! [`serve`] until shutdown, with the background tasks (outbox and event
//! relays, idempotency-key reaper, event pruner, limiter sweeper).

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use common::config::{BrokerArgs, DatabaseArgs};
use common::queue::{Broker, Topology};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;
use crate::http::idempotency;
use crate::state::limiter;
use crate::state::outbox::Outbox;
use crate::state::waiters::Waiters;
use crate::state::{metrics, AppState};
use crate::{routes, webhooks};

/// Connects to the database (applying migrations) and the broker. A broker
/// that is down at start is not fatal: payments are accepted into the outbox
/// and published once it is back.
pub async fn connect(
    database: &DatabaseArgs,
    amqp: &BrokerArgs,
) -> anyhow::Result<(PgPool, Arc<Broker>)> {
    let pool = common::db::connect(database).await?;
    common::db::migrate(&pool).await?;
    let topology = Topology::new(&amqp.queue_prefix);
    let broker = match Broker::connect(&amqp.amqp_url, topology.clone()).await {
        Ok(broker) => broker,
        Err(err) => {
            tracing::warn!(
                error = format!("{err:#}"),
                "broker unreachable at start; accepting payments into the outbox"
            );
            Broker::lazy(&amqp.amqp_url, topology)
        }
    };
    Ok((pool, Arc::new(broker)))
}

/// Serves until `shutdown` fires, then finishes in-flight requests (bounded
/// by `SHUTDOWN_TIMEOUT`) and stops the background tasks.
pub async fn serve(
    listener: TcpListener,
    pool: PgPool,
    broker: Arc<Broker>,
    settings: ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let secrets = Arc::new(settings.secrets_key.clone().context(
        "SECRETS_KEY is not set: the API seals webhook signing secrets with it \
         (`openssl rand -base64 32`; the workers need the same value)",
    )?);
    let background = CancellationToken::new();
    // Secrets stored before sealing, or under a key rotated out, are sealed
    // under the first key now (off the request path; the next start tries
    // again if the database is not there yet).
    tokio::spawn({
        let (pool, secrets) = (pool.clone(), secrets.clone());
        async move {
            match common::db::webhooks::reseal_secrets(&pool, &secrets).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(resealed = n, "webhook signing secrets resealed"),
                Err(err) => tracing::error!(
                    error = format!("{err:#}"),
                    "resealing webhook signing secrets"
                ),
            }
        }
    });
    let waiters = Arc::new(Waiters::default());
    let listen = tokio::spawn(waiters.clone().listen(pool.clone(), background.clone()));
    let (outbox, outbox_tasks) = Outbox::start(
        pool.clone(),
        broker.clone(),
        settings.relay_interval,
        background.clone(),
    );
    let reaper = tokio::spawn(idempotency::reaper(
        pool.clone(),
        // Bounded by the parser; saturating for callers that build `ServeArgs`
        // themselves, so a huge value keeps keys longer instead of wrapping.
        Duration::from_secs(settings.idempotency_ttl_hours.saturating_mul(3600)),
        background.clone(),
    ));
    let webhook_broker = Arc::new(broker.sibling(Topology::webhooks(broker.topology().prefix())));
    let event_relay = tokio::spawn(webhooks::relay(
        pool.clone(),
        webhook_broker.clone(),
        settings.public_base_url.clone(),
        background.clone(),
    ));
    let pruner = tokio::spawn(webhooks::pruner(
        pool.clone(),
        settings.event_retention_days,
        background.clone(),
    ));
    let shutdown_timeout = settings.shutdown_timeout;
    let limiter = Arc::new(limiter::Limiter::new(
        settings.rate_limit_per_second,
        settings.rate_limit_burst,
    ));
    let sweeper = tokio::spawn(limiter::sweeper(limiter.clone(), background.clone()));
    let state = AppState {
        pool,
        broker: broker.clone(),
        settings: Arc::new(settings),
        metrics: Arc::new(metrics::Metrics::default()),
        webhook_broker: webhook_broker.clone(),
        limiter,
        openapi: Arc::from(crate::openapi::json().context("building the OpenAPI document")?),
        sign_ins: Arc::default(),
        secrets,
        waiters,
        outbox,
        shutdown: shutdown.clone(),
    };
    let app = routes::router(state);
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // Boxed so it can be dropped below: dropping it drops the router and with
    // it the last sender of the outbox deleter, which then drains and ends.
    let mut server = Box::pin(server.into_future());
    tokio::select! {
        result = &mut server => result.context("serving HTTP")?,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await;
        } => tracing::warn!("in-flight requests did not finish within SHUTDOWN_TIMEOUT"),
    }
    drop(server);
    background.cancel();
    for task in outbox_tasks {
        let _ = task.await;
    }
    let _ = listen.await;
    let _ = event_relay.await;
    let _ = pruner.await;
    let _ = reaper.await;
    let _ = sweeper.await;
    broker.close().await;
    webhook_broker.close().await;
    tracing::info!("api stopped");
    Ok(())
}
