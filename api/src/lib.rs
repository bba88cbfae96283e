//! The HTTP API of the payment processor.
//!
//! Accepts card payments, writes each with its outbox row in one
//! transaction, publishes it to RabbitMQ with a publisher confirm, and
//! answers `202 Accepted`; clients poll `GET /v1/payments/:id` or ask to wait
//! with `Prefer: wait=N`. [`serve`] takes its listener and shutdown signal
//! from the caller, so tests start it on port 0.

mod admin;
pub mod auth;
pub mod cli;
pub mod console;
pub mod error;
pub mod extract;
mod health;
pub mod idempotency;
pub mod keys;
mod lifecycle;
mod list;
pub mod metrics;
pub mod openapi;
pub mod outbox;
mod payments;
pub mod rate_limit;
mod receipts;
pub mod request;
pub mod request_id;
mod validate;
mod waiters;
pub mod webhooks;
pub mod wire;

use std::future::IntoFuture as _;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::header;
use axum::response::{IntoResponse as _, Response};
use axum::Router;
use common::config::{BrokerArgs, DatabaseArgs};
use common::queue::{Broker, Topology};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::outbox::Outbox;
use crate::waiters::Waiters;

/// The longest `REQUEST_TIMEOUT`: a request, and with it the lock on its
/// idempotency key, is bounded to minutes, not days.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

fn parse_request_timeout(value: &str) -> Result<Duration, String> {
    let timeout = common::config::parse_secs(value)?;
    if timeout.is_zero() || timeout > MAX_REQUEST_TIMEOUT {
        return Err(format!(
            "REQUEST_TIMEOUT must be more than 0 and at most {} seconds",
            MAX_REQUEST_TIMEOUT.as_secs()
        ));
    }
    Ok(timeout)
}

/// Settings of `api serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long = "bind", env = "API_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// Public base URL of the API, used in `Location` headers and receipt URLs.
    #[arg(long, env = "PUBLIC_BASE_URL", default_value = "http://127.0.0.1:8080")]
    pub public_base_url: String,

    /// Seconds an outbox row waits for the fast path before the relay
    /// publishes it.
    #[arg(long, env = "OUTBOX_RELAY_AFTER", default_value = "5", value_parser = common::config::parse_secs)]
    pub relay_after: Duration,

    /// Seconds between outbox relay runs.
    #[arg(long, env = "OUTBOX_RELAY_INTERVAL", default_value = "1", value_parser = common::config::parse_secs)]
    pub relay_interval: Duration,

    /// Hours an idempotency key is kept: at least 24, at most ten years
    /// (87600), so the retention in seconds cannot overflow.
    #[arg(
        long,
        env = "IDEMPOTENCY_KEY_TTL_HOURS",
        default_value_t = 24,
        value_parser = parse_ttl_hours,
    )]
    pub idempotency_ttl_hours: u64,

    /// Seconds a request may take in all, body included (slow clients get
    /// 408), at most 300. Keep it above 30 so every `Prefer: wait` can be
    /// honoured. An idempotency key stays locked 10 s longer than this, so
    /// the lock always outlives the request holding it.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "40", value_parser = parse_request_timeout)]
    pub request_timeout: Duration,

    /// Seconds to finish in-flight requests after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30", value_parser = common::config::parse_secs)]
    pub shutdown_timeout: Duration,

    /// Let webhook endpoints resolve to loopback, private and link-local
    /// addresses (development and tests only; the worker has the same
    /// setting for delivery).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,

    /// Requests per second each API key may make, sustained (1 to a
    /// million). Per API process: see the README.
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value = "100", value_parser = rate_limit::parse_rate)]
    pub rate_limit_per_second: NonZeroU32,

    /// Requests each API key may make at once, above the sustained rate (1
    /// to a million).
    #[arg(long, env = "RATE_LIMIT_BURST", default_value = "200", value_parser = rate_limit::parse_rate)]
    pub rate_limit_burst: NonZeroU32,

    /// Days events and their delivery attempts are kept (1 to 3650); older
    /// ones are pruned in batches by every API process, hourly.
    #[arg(long, env = "EVENT_RETENTION_DAYS", default_value_t = 30, value_parser = parse_retention_days)]
    pub event_retention_days: u32,

    /// The keys that seal webhook signing secrets at rest: base64 keys of
    /// 32 bytes, comma-separated, the sealing one first (`openssl rand
    /// -base64 32`). Required to serve; the workers need the same list.
    /// Never logged. See `common::secret`.
    #[arg(long, env = "SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<common::secret::SecretsKeys>,

    /// What the operator views need to know of the workers.
    #[command(flatten)]
    pub console: console::ConsoleArgs,
}

/// `EVENT_RETENTION_DAYS`: 1 to 3650 (ten years), naming the variable.
fn parse_retention_days(value: &str) -> Result<u32, String> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|days| (1..=3650).contains(days))
        .ok_or_else(|| "EVENT_RETENTION_DAYS is a whole number of days from 1 to 3650".into())
}

/// The longest idempotency-key retention, in hours: ten years.
pub const MAX_IDEMPOTENCY_TTL_HOURS: u64 = 87_600;

/// `IDEMPOTENCY_KEY_TTL_HOURS`: 24 to [`MAX_IDEMPOTENCY_TTL_HOURS`]. The
/// error names the variable as well as the flag (clap names only the flag,
/// which is spelt differently).
fn parse_ttl_hours(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|hours| (24..=MAX_IDEMPOTENCY_TTL_HOURS).contains(hours))
        .ok_or_else(|| {
            format!(
                "IDEMPOTENCY_KEY_TTL_HOURS is a whole number of hours from 24 to \
                 {MAX_IDEMPOTENCY_TTL_HOURS} (ten years)"
            )
        })
}

/// Everything `api serve` needs.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "api",
    version,
    about = "Payment API: accepts card payments and queues them for the workers."
)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub log: common::telemetry::LogArgs,
    #[command(subcommand)]
    pub command: Option<cli::Command>,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub broker: Arc<Broker>,
    pub settings: Arc<ServeArgs>,
    pub metrics: Arc<metrics::Metrics>,
    /// The webhook queues (a connection of their own, opened on first use).
    pub webhook_broker: Arc<Broker>,
    pub limiter: Arc<rate_limit::Limiter>,
    /// Seals webhook signing secrets before they are stored.
    pub secrets: Arc<common::secret::SecretsKeys>,
    waiters: Arc<Waiters>,
    outbox: Outbox,
    shutdown: CancellationToken,
}

/// Connects to the database (applying migrations) and the broker. A broker
/// that is down at start is not fatal: payments are accepted into the outbox
/// and published once it is back.
pub async fn connect(config: &Config) -> anyhow::Result<(PgPool, Arc<Broker>)> {
    let pool = common::db::connect(&config.database).await?;
    common::db::migrate(&pool).await?;
    let topology = Topology::new(&config.broker.queue_prefix);
    let broker = match Broker::connect(&config.broker.amqp_url, topology.clone()).await {
        Ok(broker) => broker,
        Err(err) => {
            tracing::warn!(
                error = format!("{err:#}"),
                "broker unreachable at start; accepting payments into the outbox"
            );
            Broker::lazy(&config.broker.amqp_url, topology)
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
    let limiter = Arc::new(rate_limit::Limiter::new(
        settings.rate_limit_per_second,
        settings.rate_limit_burst,
    ));
    let sweeper = tokio::spawn(rate_limit::sweeper(limiter.clone(), background.clone()));
    let state = AppState {
        pool,
        broker: broker.clone(),
        settings: Arc::new(settings),
        metrics: Arc::new(metrics::Metrics::default()),
        webhook_broker: webhook_broker.clone(),
        limiter,
        secrets,
        waiters,
        outbox,
        shutdown: shutdown.clone(),
    };
    let app = router(state);
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

/// The route table: every route the API serves, each registered with its
/// OpenAPI description (`utoipa_axum::routes!`), so the router and
/// [`openapi::document`] are built from this one list. A new module adds its
/// `routes()` to one of the two groups.
///
/// With `state`, the keyed routes get the per-key rate limit (which also
/// authenticates); without it, the table is only read for the document.
pub(crate) fn route_table(state: Option<AppState>) -> OpenApiRouter<AppState> {
    // Routes that take an API key: authenticated and rate-limited per key.
    let keyed = OpenApiRouter::default()
        .merge(payments::routes())
        .merge(lifecycle::routes())
        .merge(list::routes())
        .merge(webhooks::routes())
        .merge(admin::routes());
    let keyed = match state {
        Some(state) => keyed.route_layer(axum::middleware::from_fn_with_state(
            state,
            rate_limit::middleware,
        )),
        None => keyed,
    };
    // Routes without a key.
    let public = OpenApiRouter::default()
        .merge(receipts::routes())
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(openapi::routes());
    keyed.merge(public)
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let request_timeout = state.settings.request_timeout;
    let (routes, _) = route_table(Some(state.clone())).split_for_parts();
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(axum::middleware::map_response(envelope_every_error))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            request_id::middleware,
        ))
}

/// Every error answer in the envelope. axum's extractors and layers answer
/// their rejections in plain text (a path segment that is not UTF-8 once
/// decoded, a query string that does not fit, a body limit); this replaces
/// any error answer that is not JSON with the envelope of its status. Inside
/// the request-id layer, so the envelope quotes the request id. JSON error
/// answers are left alone: they are the envelope already, or a deliberate
/// report such as `/readyz`'s.
async fn envelope_every_error(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_error || is_json {
        return response;
    }
    tracing::debug!(
        status = status.as_u16(),
        "an error answer from outside the handlers, put in the envelope"
    );
    let mut enveloped = ApiError::from_status(status).into_response();
    // Headers that still hold for the new body.
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = response.headers().get(&name) {
            enveloped.headers_mut().insert(name, value.clone());
        }
    }
    enveloped
}

async fn not_found() -> ApiError {
    ApiError::not_found("No such endpoint.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::bad_request(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This endpoint does not support that HTTP method.",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    axum::response::IntoResponse::into_response(ApiError::internal(anyhow::anyhow!(
        "handler panicked"
    )))
}
