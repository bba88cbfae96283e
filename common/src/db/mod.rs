//! PostgreSQL access: the pool, migrations, and one module of plain SQL per
//! table. Functions take an executor (pool, connection or transaction) so the
//! caller decides the transaction boundaries.
//!
//! Every statement with a fixed text is checked against the schema at build
//! time (`sqlx::query!` and friends, also through the column lists of
//! `sql` and the statements of [`lifecycle`] that payments and operations
//! share): offline from the committed `.sqlx/` (`SQLX_OFFLINE=true`, set in
//! `.cargo/config.toml`), and `cargo sqlx prepare --check` in CI proves that
//! directory matches the code and the migrations. Checked only when they
//! run: the payment list's filter (`payment_list`, a `QueryBuilder` whose
//! every value is a bind, built from the filters present; its tests run it),
//! and this module's bootstrap (`CREATE DATABASE` on the `postgres`
//! database, before any schema exists).

// The statement macros first: a `macro_rules!` is visible only to the
// modules declared after it.
#[macro_use]
mod sql;
#[macro_use]
pub mod lifecycle;
mod types;

pub mod api_keys;
pub mod audit;
pub mod console_sessions;
pub mod console_views;
pub mod idempotency;
pub mod operations;
pub mod outbox;
pub mod payment_list;
pub mod payments;
pub mod receipts;
pub mod webhooks;
pub mod workers;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::DatabaseArgs;

/// How long a request waits for a pooled connection before the database is
/// called unavailable: short enough that an outage is a 503 within seconds
/// rather than a hung request, long enough that a burst of requests queueing
/// for the pool on a busy machine is served rather than shed (3 s shed a
/// burst of 200 payments on a loaded 2-core machine).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether an error means "the database cannot be reached right now" (as
/// opposed to a bad query or a constraint violation).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // Class 08: connection exception; 57P0x: the server is shutting
            // down or in recovery; 53300: too many connections.
            db.code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300")
        }
        _ => false,
    }
}

/// Whether an error is worth retrying after a pause: the database is
/// unreachable ([`is_unavailable`]), or it is up but could not do this now
/// (a lock or statement timeout, a deadlock, a serialization failure, a
/// cancelled query). None of these says anything about the payment, so a
/// worker backs off and tries again, never counting it against the job.
pub fn is_transient(err: &sqlx::Error) -> bool {
    is_unavailable(err)
        || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| {
            // 55P03 lock_not_available (lock_timeout), 57014 query_canceled
            // (statement_timeout), 40001 serialization_failure,
            // 40P01 deadlock_detected.
            matches!(c.as_ref(), "55P03" | "57014" | "40001" | "40P01")
        }))
}

/// Name of a violated constraint, if the error is a constraint violation.
pub fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// Connects a pool, creating the database first if it does not exist.
pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&args.database_url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    create_database_if_missing(&options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // Check a connection before handing it out, so a restarted server
        // costs one failed ping instead of one failed request.
        .test_before_acquire(true)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")?;
    Ok(pool)
}

/// A pool that connects on first use (no failure if the database is down at
/// start; tests cut it on purpose).
pub fn connect_lazy(args: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&args.database_url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    Ok(PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

/// A pool of one connection to the same database as `pool`, connecting on
/// first use, for work that must never wait behind the main pool's queue
/// (a worker's heartbeat while hundreds of payments wait for a connection).
pub fn dedicated_connection(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
        .connect_lazy_with((*pool.connect_options()).clone())
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("connecting to PostgreSQL to check the database exists")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // Another process created it at the same moment.
            Err(err)
                if err.as_database_error().and_then(|e| e.code()).as_deref() == Some("42P04") => {}
            Err(err) => return Err(err).context("creating the database"),
        }
    }
    admin.close().await.ok();
    Ok(())
}

/// Applies the migrations in `migrations/` (embedded at build time).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("../migrations")
        .run(pool)
        .await
        .context("applying migrations")
}

/// Whether the database answers (for `/readyz`).
pub async fn is_ready(pool: &PgPool) -> bool {
    sqlx::query!("SELECT 1 AS one")
        .fetch_one(pool)
        .await
        .is_ok()
}
