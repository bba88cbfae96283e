//! The payment worker: consumes jobs from RabbitMQ, claims each payment with a
//! lease, calls the card processor with the payment id as idempotency key,
//! records the outcome, and acks only after the commit. Also the operator's
//! dead-letter tooling (`worker dlq …`).
//!
//! Scale by starting more processes: they compete for one queue with no
//! coordination beyond the database's guarded updates.

pub mod cli;
pub mod consumer;
mod heartbeat;
mod http;
pub mod metrics;
pub mod operations;
pub mod processor;
pub mod rescuer;
pub mod step;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use common::config::{parse_delays, parse_secs, BrokerArgs, DatabaseArgs};
use common::queue::{Broker, Topology};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::processor::ProcessorClient;
use crate::step::StepError;

/// Default `WORKER_CONCURRENCY`: enough payments in flight that a processor
/// answering in a second still keeps one worker near the rate it reaches
/// with an instant one on the reference machine (see `docs/benchmarks.md`),
/// at a bounded cost in memory.
pub const DEFAULT_CONCURRENCY: u16 = 1024;

/// Upper bound of `WORKER_CONCURRENCY`, so a typo cannot ask for unbounded
/// memory and connections.
pub const MAX_CONCURRENCY: u16 = 10_000;

/// Default `DATABASE_MAX_CONNECTIONS` of a worker. Statements are short and
/// never span a processor call, so a few connections serve any number of
/// payments in flight. With the heartbeat's own connection a worker opens at
/// most this + 1: eight workers and an API (16) stay well under PostgreSQL's
/// default `max_connections` of 100.
pub const DEFAULT_DATABASE_CONNECTIONS: u32 = 8;

/// Settings of `worker run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Base URL of the card processor.
    #[arg(
        long,
        env = "PROCESSOR_URL",
        default_value = "http://127.0.0.1:8090",
        global = true
    )]
    pub processor_url: String,

    /// Name recorded as `processor_response.processor`.
    #[arg(
        long,
        env = "PROCESSOR_NAME",
        default_value = "processor-sim",
        global = true
    )]
    pub processor_name: String,

    /// Payments in flight in this process (also the prefetch). A payment
    /// waiting on the card processor holds a task and one HTTP connection
    /// (tens of KiB), never a database connection: the pool
    /// (`DATABASE_MAX_CONNECTIONS`) is held only for each short statement.
    /// Raise it when the processor is slow (payments/s per worker is at most
    /// this ÷ the processor's latency); it bounds the worker's memory.
    #[arg(long = "concurrency", env = "WORKER_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_CONCURRENCY)), global = true)]
    pub concurrency: u16,

    /// Processing attempts before a job is dead-lettered.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=100), global = true)]
    pub max_attempts: i32,

    /// Retry delay tiers in seconds, comma-separated; attempt n waits the
    /// n-th (the last repeats). One delay queue per tier.
    #[arg(long, env = "RETRY_DELAYS", default_value = "1,5,30,120,600", value_parser = parse_delay_list, global = true)]
    pub retry_delays: DelayList,

    /// Timeout of one processor call, in milliseconds.
    #[arg(long = "processor-timeout-ms", env = "PROCESSOR_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis, global = true)]
    pub processor_timeout: Duration,

    /// Seconds a claim (lease) lasts; must exceed three processor timeouts.
    #[arg(long = "lease-secs", env = "LEASE_SECS", default_value = "60", value_parser = parse_secs, global = true)]
    pub lease: Duration,

    /// Seconds without a heartbeat after which a worker counts as dead and
    /// its claims as void (it beats every fifth of this).
    #[arg(long = "worker-dead-after", env = "WORKER_DEAD_AFTER", default_value = "5", value_parser = parse_secs, global = true)]
    pub dead_after: Duration,

    /// Hours an authorization (`capture: false`) may stay uncaptured before
    /// the worker voids it and the payment becomes `cancelled`.
    #[arg(long, env = "AUTHORIZATION_TTL_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=8760), global = true)]
    pub authorization_ttl_hours: u64,

    /// Seconds between rescuer passes.
    #[arg(long, env = "RESCUE_INTERVAL", default_value = "10", value_parser = parse_secs, global = true)]
    pub rescue_interval: Duration,

    /// Seconds a payment may be overdue before the rescuer re-enqueues it.
    #[arg(long, env = "RESCUE_AFTER", default_value = "60", value_parser = parse_secs, global = true)]
    pub rescue_after: Duration,

    /// Seconds to finish in-flight payments after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30", value_parser = parse_secs, global = true)]
    pub shutdown_timeout: Duration,

    /// Webhook deliveries in flight in this process (also their prefetch),
    /// apart from `WORKER_CONCURRENCY`: a slow receiver never holds a
    /// payment slot.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1000), global = true)]
    pub webhook_concurrency: u16,

    /// Webhook retry delays in seconds, comma-separated: attempt n that
    /// fails waits the n-th (jittered by up to −20 %); after the last the
    /// delivery is dead-lettered. One delay queue per delay.
    #[arg(long, env = "WEBHOOK_RETRY_DELAYS", default_value = "10,60,300,1800,7200,21600,86400", value_parser = parse_delay_list, global = true)]
    pub webhook_retry_delays: DelayList,

    /// Timeout of one webhook request, in milliseconds.
    #[arg(long = "webhook-timeout-ms", env = "WEBHOOK_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis, global = true)]
    pub webhook_timeout: Duration,

    /// Let webhook deliveries connect to loopback, private and link-local
    /// addresses (development and tests only).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", global = true)]
    pub webhook_allow_private: bool,

    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(
        long,
        env = "METRICS_BIND",
        default_value = "127.0.0.1:9091",
        global = true
    )]
    pub metrics_bind: String,
}

/// Retry tiers (a newtype so clap parses the list as one value).
#[derive(Debug, Clone)]
pub struct DelayList(pub Vec<Duration>);

impl DelayList {
    /// The tier after the `attempts`-th attempt: the n-th delay, the last
    /// one repeating.
    pub fn tier(&self, attempts: i32) -> Duration {
        let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(0);
        self.0[index.min(self.0.len() - 1)]
    }

    /// The tier after the `attempts`-th attempt and the delay to wait in
    /// it: the tier less up to 20 %, so retries of many jobs that failed
    /// together spread out instead of returning at once. The delay never
    /// exceeds the tier, the queue's own TTL.
    pub fn jittered(&self, attempts: i32) -> (Duration, Duration) {
        use rand::Rng as _;
        let tier = self.tier(attempts);
        (tier, tier.mul_f64(rand::thread_rng().gen_range(0.8..=1.0)))
    }
}

impl std::ops::Deref for DelayList {
    type Target = [Duration];
    fn deref(&self) -> &[Duration] {
        &self.0
    }
}

fn parse_delay_list(value: &str) -> Result<DelayList, String> {
    parse_delays(value).map(DelayList)
}

fn parse_millis(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|ms| (1..=600_000).contains(ms))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{value:?} is not a number of milliseconds between 1 and 600000"))
}

impl Settings {
    /// Checks relations between settings that clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        // Three calls fit in a lease (one plus two quick retries), with room
        // to record the outcome; otherwise a live worker could lose its claim.
        let needed = self.processor_timeout * 3 + Duration::from_secs(2);
        anyhow::ensure!(
            self.lease >= needed,
            "LEASE_SECS ({:?}) must be at least 3 × PROCESSOR_TIMEOUT_MS + 2 s ({needed:?})",
            self.lease
        );
        anyhow::ensure!(
            self.dead_after >= Duration::from_secs(1),
            "WORKER_DEAD_AFTER must be at least 1 second"
        );
        anyhow::ensure!(!self.retry_delays.is_empty(), "RETRY_DELAYS is empty");
        anyhow::ensure!(
            !self.webhook_retry_delays.is_empty(),
            "WEBHOOK_RETRY_DELAYS is empty"
        );
        Ok(())
    }
}

/// Everything the `worker` binary takes.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "Payment worker: processes queued payments; dead-letter tooling.",
    // A worker needs fewer connections than the API: same setting, its own
    // default, `DEFAULT_DATABASE_CONNECTIONS` written as a literal clap can
    // keep (a test checks they agree).
    mut_arg("database_max_connections", |arg| arg.default_value("8"))
)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub settings: Settings,
    #[command(flatten)]
    pub log: common::telemetry::LogArgs,
    #[command(subcommand)]
    pub command: Option<cli::Command>,
}

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
    pub processor: ProcessorClient,
    pub settings: Settings,
    /// Webhook deliveries: their broker handle and HTTP client.
    pub webhooks: webhooks::Deliverer,
    pub worker_id: String,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
    /// Turns at the database: as many as `pool` has connections. Hundreds
    /// of steps may want a statement at once; they wait here, in order and
    /// without a deadline, so the pool's short acquire timeout keeps meaning
    /// "the database is unavailable" and never "busy, wait your turn" (which
    /// would send a step into the outage backoff while connections idle).
    db_turns: Semaphore,
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
        let processor = ProcessorClient::new(&settings.processor_url, settings.processor_timeout)?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        let webhook_topology = Topology::webhooks(broker.topology().prefix())
            .with_retry_delays(&settings.webhook_retry_delays);
        let webhooks = webhooks::Deliverer::new(
            Arc::new(broker.sibling(webhook_topology)),
            settings.webhook_timeout,
            settings.webhook_retry_delays.clone(),
            settings.webhook_allow_private,
        )?;
        Ok(Self {
            webhooks,
            heartbeat_pool: common::db::dedicated_connection(&pool),
            pool,
            broker,
            processor,
            settings,
            worker_id: format!(
                "worker:{host}:{}:{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            metrics: Metrics::default(),
            shutdown,
            db_turns: Semaphore::new(pool_turns),
        })
    }

    /// Runs a database operation, waiting out an unavailable database (with
    /// backoff) instead of failing the message: while the database is down
    /// every slot ends up waiting here, so the worker stops taking messages,
    /// and resumes where it was when the database is back. Each try waits
    /// for its turn at the database first (one per pooled connection).
    pub async fn db<T, F, Fut>(&self, mut op: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        let mut delays = common::retry::reconnect_delays();
        let mut warned = false;
        loop {
            let result = {
                // Never closed, so never an error; without a turn the
                // statement would merely queue in the pool.
                let _turn = self.db_turns.acquire().await.ok();
                op().await
            };
            match result {
                Ok(value) => return Ok(value),
                // Unreachable, or up but unable right now (a lock or
                // statement timeout, a deadlock): wait with growing delays,
                // never requeue, so the message's delivery count (the
                // poison check) does not grow with the database's trouble.
                Err(err) if common::db::is_transient(&err) => {
                    if !warned {
                        tracing::warn!(error = %err, "database unavailable or busy; holding the message until it answers");
                        warned = true;
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tokio::select! {
                        () = self.shutdown.cancelled() => return Err(StepError::Interrupted),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(err) => return Err(StepError::Database(err)),
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn a_worker_defaults_to_a_small_pool_and_many_payments_in_flight() {
        let config = Config::try_parse_from(["worker"]).expect("the defaults parse");
        assert_eq!(
            config.database.database_max_connections,
            DEFAULT_DATABASE_CONNECTIONS
        );
        assert_eq!(config.settings.concurrency, DEFAULT_CONCURRENCY);
        config.settings.validate().expect("the defaults are valid");
    }

    #[test]
    fn payments_in_flight_stay_bounded() {
        let too_many = (MAX_CONCURRENCY + 1).to_string();
        assert!(Config::try_parse_from(["worker", "--concurrency", &too_many]).is_err());
        assert!(Config::try_parse_from(["worker", "--concurrency", "0"]).is_err());
    }
}
