//! The `worker` binary's settings: every one a flag and an environment
//! variable, bounded by its parser, with relations clap cannot check in
//! [`Settings::validate`].

use std::time::Duration;

use common::config::parse_secs;
use common::queue::RetryTiers;

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

/// Which card processor adapter the worker talks to (`PROCESSOR`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProcessorKind {
    /// `processor-sim` at `PROCESSOR_URL`.
    #[default]
    Sim,
    /// Stripe's API at `STRIPE_API_BASE`, with `STRIPE_SECRET_KEY`.
    Stripe,
}

/// A Stripe secret key. Never printed: its `Debug` is redacted, and clap
/// hides its environment value in `--help`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret, for the one place that needs it: the `Authorization`
    /// header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl std::str::FromStr for SecretKey {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("STRIPE_SECRET_KEY is empty".into());
        }
        Ok(Self(value.to_owned()))
    }
}

/// The Stripe adapter's settings (used when `PROCESSOR=stripe`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StripeArgs {
    /// Base URL of Stripe's API (a fake such as localstripe in tests).
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com"
    )]
    pub stripe_api_base: String,

    /// Stripe secret key (`sk_test_…` or `sk_live_…`); required when
    /// `PROCESSOR=stripe`. Never logged.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<SecretKey>,
}

impl StripeArgs {
    /// The key, or the start-up error that names the setting.
    pub fn secret_key(&self) -> anyhow::Result<SecretKey> {
        self.stripe_secret_key
            .clone()
            .ok_or_else(|| anyhow::anyhow!("STRIPE_SECRET_KEY is required when PROCESSOR=stripe"))
    }
}

/// Settings of `worker run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Card processor adapter: `sim` (processor-sim at `PROCESSOR_URL`) or
    /// `stripe` (Stripe's API at `STRIPE_API_BASE`).
    #[arg(long, env = "PROCESSOR", value_enum, default_value_t = ProcessorKind::Sim)]
    pub processor: ProcessorKind,

    #[command(flatten)]
    pub stripe: StripeArgs,

    /// Base URL of the card processor (`PROCESSOR=sim`).
    #[arg(long, env = "PROCESSOR_URL", default_value = "http://127.0.0.1:8090")]
    pub processor_url: String,

    /// Name recorded as `processor_response.processor`.
    #[arg(long, env = "PROCESSOR_NAME", default_value = "processor-sim")]
    pub processor_name: String,

    /// Payments in flight in this process (also the prefetch). A payment
    /// waiting on the card processor holds a task and one HTTP connection
    /// (tens of KiB), never a database connection: the pool
    /// (`DATABASE_MAX_CONNECTIONS`) is held only for each short statement.
    /// Raise it when the processor is slow (payments/s per worker is at most
    /// this ÷ the processor's latency); it bounds the worker's memory.
    #[arg(long = "concurrency", env = "WORKER_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_CONCURRENCY)))]
    pub concurrency: u16,

    /// Processing attempts before a job is dead-lettered.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub max_attempts: i32,

    /// Retry delay tiers in seconds, comma-separated; attempt n waits the
    /// n-th (the last repeats). One delay queue per tier.
    #[arg(long, env = "RETRY_DELAYS", default_value = "1,5,30,120,600", value_parser = parse_tiers)]
    pub retry_delays: RetryTiers,

    /// Timeout of one processor call, in milliseconds.
    #[arg(long = "processor-timeout-ms", env = "PROCESSOR_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub processor_timeout: Duration,

    /// Seconds a claim (lease) lasts; must exceed three processor timeouts.
    #[arg(long = "lease-secs", env = "LEASE_SECS", default_value = "60", value_parser = parse_secs)]
    pub lease: Duration,

    /// Seconds without a heartbeat after which a worker counts as dead and
    /// its claims as void (it beats every fifth of this).
    #[arg(long = "worker-dead-after", env = "WORKER_DEAD_AFTER", default_value = "5", value_parser = parse_secs)]
    pub dead_after: Duration,

    /// Hours an authorization (`capture: false`) may stay uncaptured before
    /// the worker voids it and the payment becomes `cancelled`.
    #[arg(long, env = "AUTHORIZATION_TTL_HOURS", default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub authorization_ttl_hours: u64,

    /// Seconds between rescuer passes.
    #[arg(long, env = "RESCUE_INTERVAL", default_value = "10", value_parser = parse_secs)]
    pub rescue_interval: Duration,

    /// Seconds a payment may be overdue before the rescuer re-enqueues it.
    #[arg(long, env = "RESCUE_AFTER", default_value = "60", value_parser = parse_secs)]
    pub rescue_after: Duration,

    /// Seconds to finish in-flight payments after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30", value_parser = parse_secs)]
    pub shutdown_timeout: Duration,

    /// Webhook deliveries in flight in this process (also their prefetch),
    /// apart from `WORKER_CONCURRENCY`: a slow receiver never holds a
    /// payment slot.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub webhook_concurrency: u16,

    /// Webhook retry delays in seconds, comma-separated: attempt n that
    /// fails waits the n-th (jittered by up to −20 %); after the last the
    /// delivery is dead-lettered. One delay queue per delay.
    #[arg(long, env = "WEBHOOK_RETRY_DELAYS", default_value = "10,60,300,1800,7200,21600,86400", value_parser = parse_tiers)]
    pub webhook_retry_delays: RetryTiers,

    /// Timeout of one webhook request, in milliseconds.
    #[arg(long = "webhook-timeout-ms", env = "WEBHOOK_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub webhook_timeout: Duration,

    /// Let webhook deliveries connect to loopback, private and link-local
    /// addresses (development and tests only).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,

    /// The keys that open webhook signing secrets (the API's `SECRETS_KEY`:
    /// the same list). Required to run. Never logged.
    #[arg(long, env = "SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<common::secret::SecretsKeys>,

    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "METRICS_BIND", default_value = "127.0.0.1:9091")]
    pub metrics_bind: String,
}

fn parse_tiers(value: &str) -> Result<RetryTiers, String> {
    RetryTiers::parse(value)
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
        if self.processor == ProcessorKind::Stripe {
            self.stripe.secret_key()?;
            anyhow::ensure!(
                self.stripe.stripe_api_base.starts_with("http://")
                    || self.stripe.stripe_api_base.starts_with("https://"),
                "STRIPE_API_BASE must be an http(s) URL"
            );
        }
        Ok(())
    }
}
