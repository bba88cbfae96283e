//! Settings shared by the services: every one a command-line flag with an
//! environment variable of the same meaning and a default that works on a
//! development machine. Secrets (passwords in URLs) are never printed: the
//! `Debug` forms redact them.

use std::fmt;

/// Default `DATABASE_MAX_CONNECTIONS` (the API's; a worker sets its own,
/// smaller one).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// Where the database is.
#[derive(Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. The database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/payments"
    )]
    pub database_url: String,

    /// Connections in the pool. Each statement holds one only while it
    /// runs, so this bounds database work in progress, not the requests or
    /// payments in flight.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub database_max_connections: u32,
}

impl fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .finish()
    }
}

/// Where the broker is and which names to use on it.
#[derive(Clone, clap::Args)]
pub struct BrokerArgs {
    /// AMQP URL of RabbitMQ, or the URLs of a cluster's nodes,
    /// comma-separated: the first that answers is used, the next one when
    /// its connection is lost (DESIGN.md §15).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_parser = parse_amqp_urls
    )]
    pub amqp_url: String,

    /// Prefix of the exchange and queue names, so several deployments (or
    /// tests) share one broker without seeing each other's messages.
    #[arg(long, env = "QUEUE_PREFIX", default_value = "payments", value_parser = parse_prefix)]
    pub queue_prefix: String,
}

impl fmt::Debug for BrokerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerArgs")
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("queue_prefix", &self.queue_prefix)
            .finish()
    }
}

fn parse_amqp_urls(value: &str) -> Result<String, String> {
    crate::queue::parse_nodes(value).map(|_| value.to_owned())
}

fn parse_prefix(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err("QUEUE_PREFIX must be 1 to 100 letters, digits, `_`, `-` or `.`".into())
    }
}

/// A URL with its password replaced by `***`, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Longest single duration setting: 30 days. Every duration setting has an
/// upper bound so that no arithmetic on it (deadlines, intervals, `× 3`)
/// can overflow, and a non-finite or negative number is refused before it
/// reaches `Duration::from_secs_f64` (which panics on those).
pub const MAX_SETTING_SECS: f64 = 86_400.0 * 30.0;

/// Parses a comma-separated list of delays in seconds (`1,5,30` or `0.2,1`),
/// each 1 ms to 1 day.
pub fn parse_delays(value: &str) -> Result<Vec<std::time::Duration>, String> {
    let delays = value
        .split(',')
        .map(|part| {
            let secs: f64 = part
                .trim()
                .parse()
                .map_err(|_| format!("{part:?} is not a number of seconds"))?;
            if !(0.001..=86_400.0).contains(&secs) {
                return Err(format!("{secs} s is outside 0.001 s to 1 day"));
            }
            Ok(std::time::Duration::from_secs_f64(secs))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() {
        return Err("at least one delay is needed".into());
    }
    Ok(delays)
}

/// Parses a number of seconds (fractions allowed) into a duration of 0 to
/// 30 days ([`MAX_SETTING_SECS`]).
pub fn parse_secs(value: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds"))?;
    // `contains` is false for NaN, so this also refuses NaN and infinities.
    if !(0.0..=MAX_SETTING_SECS).contains(&secs) {
        return Err(format!(
            "{value:?} is outside 0 to {MAX_SETTING_SECS} seconds (30 days)"
        ));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/db"),
            "postgres://postgres@127.0.0.1/db"
        );
    }

    #[test]
    fn delays_parse_with_fractions_and_reject_nonsense() {
        assert_eq!(
            parse_delays("1, 0.5"),
            Ok(vec![Duration::from_secs(1), Duration::from_millis(500)])
        );
        assert!(parse_delays("").is_err());
        assert!(parse_delays("1,x").is_err());
        assert!(parse_delays("0").is_err());
    }

    #[test]
    fn durations_out_of_range_or_not_finite_are_refused_never_panicking() {
        assert_eq!(parse_secs("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_secs("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_secs("2592000"), Ok(Duration::from_secs(2_592_000)));
        for bad in ["2592001", "1e300", "-1", "NaN", "inf", "-inf", "1e19"] {
            let err = parse_secs(bad).expect_err(bad);
            assert!(err.contains("30 days"), "{bad}: {err}");
        }
        for bad in ["86401", "1e300", "NaN", "inf", "-1", "0.0001"] {
            assert!(parse_delays(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_restricted_to_safe_names() {
        assert!(parse_prefix("payments").is_ok());
        assert!(parse_prefix("t_1a.b-c").is_ok());
        assert!(parse_prefix("").is_err());
        assert!(parse_prefix("a b").is_err());
    }
}
