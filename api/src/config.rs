//! The API's settings: `api serve`'s ([`ServeArgs`], with the operator
//! console's [`ConsoleArgs`]) and how each is checked. The binary's whole
//! command line is [`crate::cli::Config`]. This module imports nothing of
//! the crate: every other part may read the settings.

use std::num::NonZeroU32;
use std::time::Duration;

use common::queue::RetryTiers;

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
    #[arg(long, env = "RATE_LIMIT_PER_SECOND", default_value = "100", value_parser = parse_rate)]
    pub rate_limit_per_second: NonZeroU32,

    /// Requests each API key may make at once, above the sustained rate (1
    /// to a million).
    #[arg(long, env = "RATE_LIMIT_BURST", default_value = "200", value_parser = parse_rate)]
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
    pub console: ConsoleArgs,
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

/// Largest `RATE_LIMIT_PER_SECOND` and `RATE_LIMIT_BURST`: a million, far
/// above what one process serves, and small enough that the bucket's
/// arithmetic (nanoseconds per request) stays exact.
pub const MAX_RATE: u32 = 1_000_000;

/// `RATE_LIMIT_PER_SECOND` / `RATE_LIMIT_BURST`: a whole number from 1 to
/// [`MAX_RATE`]. The error names the variable as well as the flag.
pub fn parse_rate(value: &str) -> Result<NonZeroU32, String> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= MAX_RATE)
        .and_then(NonZeroU32::new)
        .ok_or_else(|| {
            format!(
                "RATE_LIMIT_PER_SECOND and RATE_LIMIT_BURST are whole numbers from 1 to {MAX_RATE}"
            )
        })
}

/// Settings the operator views need: the workers' retry tiers (to read each
/// tier's queue depth), `RESCUE_AFTER` (when a payment is overdue) and
/// `WORKER_DEAD_AFTER` (when a worker is dead), the same variables and
/// defaults as the worker's so one environment configures both; and how
/// long a console session lasts.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// The workers' retry tiers, in seconds (as the worker's setting).
    #[arg(long = "console-retry-delays", env = "RETRY_DELAYS", default_value = "1,5,30,120,600", value_parser = RetryTiers::parse)]
    pub retry_delays: RetryTiers,

    /// The webhook deliveries' retry tiers, in seconds (as the worker's
    /// setting).
    #[arg(long = "console-webhook-retry-delays", env = "WEBHOOK_RETRY_DELAYS", default_value = "10,60,300,1800,7200,21600,86400", value_parser = RetryTiers::parse)]
    pub webhook_retry_delays: RetryTiers,

    /// Seconds past due after which a payment is overdue (the worker's
    /// rescuer takes it then).
    #[arg(long = "console-rescue-after", env = "RESCUE_AFTER", default_value = "60", value_parser = common::config::parse_secs)]
    pub rescue_after: Duration,

    /// Seconds without a heartbeat after which a worker is dead.
    #[arg(long = "console-worker-dead-after", env = "WORKER_DEAD_AFTER", default_value = "5", value_parser = common::config::parse_secs)]
    pub worker_dead_after: Duration,

    /// Seconds a console sign-in lasts (60 to 604800, a week); the operator
    /// signs in again after it.
    #[arg(long = "console-session-ttl", env = "CONSOLE_SESSION_TTL", default_value = "28800", value_parser = parse_session_ttl)]
    pub session_ttl: Duration,
}

/// The longest `CONSOLE_SESSION_TTL`: a week.
const MAX_SESSION_TTL: Duration = Duration::from_secs(7 * 86_400);

/// `CONSOLE_SESSION_TTL`: a minute to a week, naming the variable.
fn parse_session_ttl(value: &str) -> Result<Duration, String> {
    let ttl = common::config::parse_secs(value)?;
    if ttl < Duration::from_secs(60) || ttl > MAX_SESSION_TTL {
        return Err(format!(
            "CONSOLE_SESSION_TTL is 60 to {} seconds (a week)",
            MAX_SESSION_TTL.as_secs()
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_bounded() {
        assert_eq!(parse_rate("100").map(NonZeroU32::get), Ok(100));
        for bad in ["0", "-1", "1000001", "lots", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
