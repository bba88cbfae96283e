//! The `worker` binary's subcommands: `run` (default) and `dlq …`.

use std::collections::HashSet;

use anyhow::Context as _;
use clap::Parser as _;
use common::config::{BrokerArgs, DatabaseArgs};
use common::dead_letters as dlq;
use common::domain::PaymentId;

use crate::config::Settings;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Process payments until SIGTERM (the default).
    Run,
    /// Inspect and act on the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// Show dead letters without consuming or reordering them.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back to the main queue and their payments to pending.
    Replay {
        /// Replay every dead letter (that matches the filters).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Payment ids (`pay_…`) to replay; none with `--reason` or
        /// `--older-than`: every dead letter those select.
        #[arg(required_unless_present_any = ["all", "reason", "older_than"])]
        ids: Vec<PaymentId>,
        /// Only dead letters with this reason (attempts_exhausted,
        /// processor_rejected, redelivered_too_often, undecodable,
        /// unknown_payment, delivery_limit, unknown).
        #[arg(long)]
        reason: Option<dlq::DeadLetterReason>,
        /// Only dead letters older than this (90s, 15m, 2h, 1d; at most
        /// ten years, 3650d).
        #[arg(long, value_parser = dlq::parse_age)]
        older_than: Option<dlq::Age>,
    },
    /// Discard every dead letter (their payments stay failed).
    Purge {
        /// Confirm: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// What `main` runs.
pub async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    match config.command {
        None | Some(Command::Run) => common::telemetry::init(config.log.log_format),
        Some(Command::Dlq { .. }) => common::telemetry::init_quiet(config.log.log_format),
    }
    run(config).await
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    match config.command.clone().unwrap_or(Command::Run) {
        Command::Run => {
            config.settings.validate()?;
            let listener = tokio::net::TcpListener::bind(&config.settings.metrics_bind)
                .await
                .with_context(|| {
                    format!("binding METRICS_BIND {}", config.settings.metrics_bind)
                })?;
            let (pool, broker) =
                crate::service::connect(&config.database, &config.broker, &config.settings).await?;
            crate::service::run(
                pool,
                broker,
                config.settings,
                listener,
                common::shutdown::on_signal(),
            )
            .await
        }
        Command::Dlq { command } => {
            let (pool, broker) =
                crate::service::connect(&config.database, &config.broker, &config.settings).await?;
            let actor = operator();
            let result = dlq_command(&pool, &broker, command, &actor).await;
            broker.close().await;
            result
        }
    }
}

/// Who ran an operator command, for the payments' history.
fn operator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("operator:{user}")
}

async fn dlq_command(
    pool: &sqlx::PgPool,
    broker: &common::queue::Broker,
    command: DlqCommand,
    actor: &str,
) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { limit, json } => {
            let letters = dlq::list(broker, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
                return Ok(());
            }
            let mut table = common::cli::Table::new(&[
                "payment",
                "merchant",
                "reason",
                "attempts",
                "dead-lettered at",
                "last error",
            ]);
            for l in &letters {
                table.row(&[
                    l.payment_id.as_deref().unwrap_or("(undecodable)"),
                    &l.merchant_id.map(|m| m.to_string()).unwrap_or_default(),
                    &l.reason.to_string(),
                    &l.attempts.map(|a| a.to_string()).unwrap_or_default(),
                    &l.dead_lettered_at
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default(),
                    l.last_error.as_deref().unwrap_or(""),
                ]);
            }
            table.print()?;
            println!("{} dead letter(s)", letters.len());
        }
        DlqCommand::Replay {
            all,
            ids,
            reason,
            older_than,
        } => {
            let filter = dlq::Filter {
                // No ids (`--all`, or only `--reason`/`--older-than`): every
                // dead letter the filters select.
                ids: (!all && !ids.is_empty()).then(|| ids.into_iter().collect::<HashSet<_>>()),
                reason,
                older_than,
            };
            let report = dlq::replay(pool, broker, &filter, actor).await?;
            for id in &report.replayed {
                println!("replayed {id}");
            }
            for id in &report.dropped {
                println!("dropped {id} (the payment had already moved on; nothing to replay)");
            }
            println!(
                "{} replayed, {} dropped, {} left in the dead-letter queue",
                report.replayed.len(),
                report.dropped.len(),
                report.kept
            );
        }
        DlqCommand::Purge { yes } => {
            anyhow::ensure!(
                yes,
                "purging discards dead letters for good; pass --yes to confirm"
            );
            let purged = dlq::purge(pool, broker, actor).await?;
            println!("purged {purged} dead letter(s)");
        }
    }
    Ok(())
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
    pub command: Option<Command>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        ProcessorKind, DEFAULT_CONCURRENCY, DEFAULT_DATABASE_CONNECTIONS, MAX_CONCURRENCY,
    };

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
    fn stripe_needs_its_secret_key_and_never_prints_it() {
        let config = Config::try_parse_from(["worker", "--processor", "stripe"])
            .expect("parses without a key");
        let err = config.settings.validate().expect_err("no key");
        assert!(err.to_string().contains("STRIPE_SECRET_KEY"), "{err}");

        let config = Config::try_parse_from([
            "worker",
            "--processor",
            "stripe",
            "--stripe-secret-key",
            "sk_test_secret123",
        ])
        .expect("parses");
        config.settings.validate().expect("valid with a key");
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk_test_secret123"), "{shown}");
        assert_eq!(config.settings.processor, ProcessorKind::Stripe);
        assert_eq!(
            config.settings.stripe.stripe_api_base,
            "https://api.stripe.com"
        );
    }

    #[test]
    fn the_simulator_is_the_default_processor() {
        let config = Config::try_parse_from(["worker"]).expect("the defaults parse");
        assert_eq!(config.settings.processor, ProcessorKind::Sim);
    }

    #[test]
    fn payments_in_flight_stay_bounded() {
        let too_many = (MAX_CONCURRENCY + 1).to_string();
        assert!(Config::try_parse_from(["worker", "--concurrency", &too_many]).is_err());
        assert!(Config::try_parse_from(["worker", "--concurrency", "0"]).is_err());
    }
}
