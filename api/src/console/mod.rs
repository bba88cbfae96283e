//! The operator console (issue 23, DESIGN.md section 14): its settings.
//!
//! Only the settings have landed so far: the operator API additions they
//! feed (`/v1/admin/overview`, `/v1/admin/attention`, purge, audit, in
//! `admin`) are in place; the browser pages are not written yet.

use std::time::Duration;

use common::queue::RetryTiers;

/// Settings the operator views need: the workers' retry tiers (to read each
/// tier's queue depth), `RESCUE_AFTER` (when a payment is overdue) and
/// `WORKER_DEAD_AFTER` (when a worker is dead). Same variables and defaults
/// as the worker's, so one environment configures both.
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
}
