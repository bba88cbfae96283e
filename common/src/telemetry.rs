//! Logging setup shared by every binary.
//!
//! Human-readable lines by default (local development), one JSON object per
//! line with `LOG_FORMAT=json` (production). Levels come from `RUST_LOG`
//! (default `info`). Spans carry `request_id` and `payment_id`; nothing logs
//! card tokens, API keys or customer e-mail addresses.

use std::io;

use clap::ValueEnum;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Readable lines for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging flags, flattened into every binary's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Installs the global subscriber writing to stderr. Call once, at start-up.
pub fn init(format: LogFormat) {
    init_with_writer(format, "info", io::stderr);
}

/// As [`init`], for a one-off command (`api keys …`, `worker dlq …`):
/// quiet unless something is wrong, or `RUST_LOG` asks for more.
pub fn init_quiet(format: LogFormat) {
    init_with_writer(format, "warn", io::stderr);
}

/// Installs the global subscriber with a default filter (`RUST_LOG` wins)
/// and a writer of the caller's choice (tests capture logs this way). A
/// second call is a no-op.
pub fn init_with_writer<W>(format: LogFormat, default_filter: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // Already initialised (several services in one test process): keep the first.
    drop(result);
}
