//! Database work: what PostgreSQL did for one scenario's payments, from its
//! cumulative statistics, counted between two instants.
//!
//! - Transactions: `xact_commit` and `xact_rollback` of `pg_stat_database`
//!   for the scenario's own database. Read-only transactions count too (each
//!   statement sent outside a transaction block is one), and so do the
//!   transactions of autovacuum workers in that database.
//! - Statements: the sum of `calls` of the top-level entries of
//!   `pg_stat_statements` for that database's `dbid`, when the server has the
//!   extension in `shared_preload_libraries`. `BEGIN` and `COMMIT` are
//!   statements of their own (`track_utility`); what triggers run inside a
//!   statement is not.
//! - WAL: `wal_bytes`, `wal_records` and `wal_fpi` (full-page images) of
//!   `pg_stat_wal`, which counts the whole server: a scenario is the only
//!   thing running on it.
//!
//! Every reading is taken from a connection to the maintenance database
//! (`postgres`), so that reading never counts itself. The bench's own polls
//! of the scenario database (one statement, one transaction each) are
//! counted by [`crate::system::System`] and subtracted.
//!
//! # Why a reading waits
//!
//! PostgreSQL 15 counts `pg_stat_statements` in shared memory as each
//! statement ends, but a backend keeps its `pg_stat_database` and
//! `pg_stat_wal` counts to itself until it flushes them: when it goes idle,
//! at most once per second (`PGSTAT_MIN_INTERVAL`); if it went idle too soon
//! after its last flush, only when it has been idle for 10 s
//! (`PGSTAT_IDLE_INTERVAL`), or when it exits. `pg_stat_force_next_flush()`
//! acts on the calling session only, so it cannot reach the services'
//! connections. A reading at the instant the burst ends would miss up to a
//! second of every busy connection's work, and hand it to the next window.
//!
//! So [`DbStats::settled`] first waits, watching `pg_stat_activity`, until
//! every client backend of the scenario's database has flushed everything it
//! did before the call: it is idle and either went idle more than
//! [`FLUSH_INTERVAL`] after the call (that transaction's end flushed, or a
//! flush after the call already had) or has been idle longer than
//! [`IDLE_FLUSH`] (the idle timeout flushed). Work done while waiting
//! (the services' periodic tasks, a few statements a second) is counted in
//! the window before the call; next to thousands of payments it is noise.
//! Autovacuum workers flush when they exit, which they do within seconds.
//! One more PostgreSQL 15 detail: a backend flushes its transaction counts
//! only together with table statistics, so a transaction that touches no
//! table (a session's start, a `SELECT 1`) is published with that backend's
//! next one that does, or when it exits. Every transaction of the payment
//! path touches a table; what this shifts is a connection's start, counted
//! in the window of its first real work.
//! If the wait reaches [`SETTLE_LIMIT`], the reading is taken anyway and
//! marked unsettled; the report says so.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sqlx::Connection as _;
use tokio::time::Instant;

use crate::system::Env;

/// A backend flushes at a transaction's end when its last flush is at least
/// `PGSTAT_MIN_INTERVAL` (1 s) old; the margin covers the gap between a
/// transaction's end and the `state_change` it reports.
const FLUSH_INTERVAL: &str = "1200 milliseconds";
/// An idle backend with counts still pending flushes after
/// `PGSTAT_IDLE_INTERVAL` (10 s), plus a margin for a busy machine, where
/// a backend can take a while to act on its timer.
const IDLE_FLUSH: &str = "11 seconds";
/// The longest wait for the flushes.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// Reads the counters of one scenario's database.
pub struct DbStats {
    maintenance_url: String,
    database: String,
    /// Why statements cannot be counted, if they cannot.
    statements_missing: Option<String>,
}

/// The counters at one moment, after the flushes.
#[derive(Debug, Clone)]
pub struct DbReading {
    /// The server's clock (`now()`), comparable with `payments.created_at`.
    pub at: chrono::DateTime<chrono::Utc>,
    commits: i64,
    rollbacks: i64,
    /// `calls` of each of the database's entries, and
    /// `pg_stat_statements_info.dealloc` (how many entries were ever evicted).
    statements: Option<Statements>,
    wal_bytes: i64,
    wal_records: i64,
    wal_fpi: i64,
    /// The bench's own statements on the database so far.
    own_statements: u64,
    settled: bool,
    settle_s: f64,
}

/// The database's `pg_stat_statements` entries at one reading.
#[derive(Debug, Clone, Default)]
struct Statements {
    /// `calls` by `(userid, queryid)`.
    calls: BTreeMap<(i64, i64), i64>,
    dealloc: i64,
}

impl Statements {
    fn total(&self) -> i64 {
        self.calls.values().sum()
    }

    /// Whether an entry of the database counted at `self` was evicted by
    /// `later` (the server's table of statements was full). Evictions take
    /// the least used entries first, so a busy entry that lost its count and
    /// climbed back above it in one window is not worth guarding against.
    fn lost_by(&self, later: &Self) -> bool {
        later.dealloc != self.dealloc
            && self
                .calls
                .iter()
                .any(|(key, calls)| later.calls.get(key).is_none_or(|after| after < calls))
    }
}

/// What PostgreSQL did between two readings, the bench's own polls taken
/// out. Totals: the report divides them per 1,000 payments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DbWork {
    pub commits: u64,
    pub rollbacks: u64,
    /// `None`: see `statements_missing`.
    pub statements: Option<u64>,
    pub statements_missing: Option<String>,
    pub wal_bytes: u64,
    pub wal_records: u64,
    pub wal_fpi: u64,
    /// The bench's own statements (progress polls, one transaction each),
    /// already subtracted from `commits` and `statements`.
    pub own_statements: u64,
    /// Whether every backend had flushed before both readings (false: the
    /// wait reached its limit and a count may be short).
    pub settled: bool,
    /// Seconds the reading after the window waited for the flushes.
    pub settle_s: f64,
}

impl DbStats {
    /// Finds out whether `pg_stat_statements` can be read, creating the
    /// extension in the maintenance database if the server has it loaded
    /// (its view covers every database).
    pub async fn new(env: &Env, database: &str) -> anyhow::Result<Self> {
        Self::on(&env.database_url("postgres"), database).await
    }

    /// Reads `database` from the server of `maintenance_url`.
    async fn on(maintenance_url: &str, database: &str) -> anyhow::Result<Self> {
        let maintenance_url = maintenance_url.to_owned();
        let mut conn = connect(&maintenance_url).await?;
        let loaded: bool = sqlx::query_scalar(
            "SELECT 'pg_stat_statements' = ANY (string_to_array(
                 replace(current_setting('shared_preload_libraries'), ' ', ''), ','))",
        )
        .fetch_one(&mut conn)
        .await?;
        let statements_missing = if !loaded {
            Some("pg_stat_statements not loaded".to_owned())
        } else if let Err(err) = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut conn)
            .await
        {
            Some(format!("CREATE EXTENSION pg_stat_statements failed: {err}"))
        } else {
            let track: String =
                sqlx::query_scalar("SELECT current_setting('pg_stat_statements.track')")
                    .fetch_one(&mut conn)
                    .await?;
            (track == "none").then(|| "pg_stat_statements.track is none".to_owned())
        };
        conn.close().await.ok();
        Ok(Self {
            maintenance_url,
            database: database.to_owned(),
            statements_missing,
        })
    }

    /// The counters once every backend of the database has flushed what it
    /// did before this call (see the module's doc). `own_statements`: the
    /// bench's own statements on the database so far.
    pub async fn settled(&self, own_statements: u64) -> anyhow::Result<DbReading> {
        let started = Instant::now();
        let mut conn = connect(&self.maintenance_url).await?;
        let horizon: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(&format!(
            "SELECT clock_timestamp() + interval '{FLUSH_INTERVAL}'"
        ))
        .fetch_one(&mut conn)
        .await?;
        let unflushed = format!(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = $1 AND backend_type = 'client backend'
               AND NOT (state = 'idle' AND (state_change >= $2
                    OR state_change < clock_timestamp() - interval '{IDLE_FLUSH}'))"
        );
        let settled = loop {
            let pending: i64 = sqlx::query_scalar(&unflushed)
                .bind(&self.database)
                .bind(horizon)
                .fetch_one(&mut conn)
                .await
                .context("watching pg_stat_activity")?;
            if pending == 0 {
                break true;
            }
            if started.elapsed() >= SETTLE_LIMIT {
                break false;
            }
            tokio::time::sleep(SETTLE_POLL).await;
        };
        let (at, commits, rollbacks, wal_bytes, wal_records, wal_fpi) = sqlx::query_as(
            "SELECT now(), d.xact_commit, d.xact_rollback, w.wal_bytes::bigint, w.wal_records,
                    w.wal_fpi
             FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = $1",
        )
        .bind(&self.database)
        .fetch_one(&mut conn)
        .await
        .context("reading pg_stat_database and pg_stat_wal")?;
        let statements = match self.statements_missing {
            Some(_) => None,
            None => Some(self.statements(&mut conn).await?),
        };
        conn.close().await.ok();
        Ok(DbReading {
            at,
            commits,
            rollbacks,
            statements,
            wal_bytes,
            wal_records,
            wal_fpi,
            own_statements,
            settled,
            settle_s: started.elapsed().as_secs_f64(),
        })
    }

    async fn statements(&self, conn: &mut sqlx::PgConnection) -> anyhow::Result<Statements> {
        // `false`: without the query texts, which live in a file.
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT s.userid::bigint, s.queryid, s.calls FROM pg_stat_statements(false) s
             WHERE s.toplevel AND s.dbid = (SELECT oid FROM pg_database WHERE datname = $1)",
        )
        .bind(&self.database)
        .fetch_all(&mut *conn)
        .await
        .context("reading pg_stat_statements")?;
        let dealloc: i64 = sqlx::query_scalar("SELECT dealloc FROM pg_stat_statements_info")
            .fetch_one(&mut *conn)
            .await
            .context("reading pg_stat_statements_info")?;
        let calls = rows.into_iter().map(|(u, q, c)| ((u, q), c)).collect();
        Ok(Statements { calls, dealloc })
    }

    /// The work between `before` and `after`.
    pub fn work(&self, before: &DbReading, after: &DbReading) -> DbWork {
        let delta = |a: i64, b: i64| u64::try_from(b.saturating_sub(a)).unwrap_or(0);
        let own = after.own_statements.saturating_sub(before.own_statements);
        let (statements, statements_missing) = match (&before.statements, &after.statements) {
            (Some(a), Some(b)) if a.lost_by(b) => (
                None,
                Some(
                    "pg_stat_statements evicted some of this database's entries (raise \
                     pg_stat_statements.max)"
                        .into(),
                ),
            ),
            (Some(a), Some(b)) => (Some(delta(a.total(), b.total()).saturating_sub(own)), None),
            _ => (None, self.statements_missing.clone()),
        };
        DbWork {
            commits: delta(before.commits, after.commits).saturating_sub(own),
            rollbacks: delta(before.rollbacks, after.rollbacks),
            statements,
            statements_missing,
            wal_bytes: delta(before.wal_bytes, after.wal_bytes),
            wal_records: delta(before.wal_records, after.wal_records),
            wal_fpi: delta(before.wal_fpi, after.wal_fpi),
            own_statements: own,
            settled: before.settled && after.settled,
            settle_s: after.settle_s,
        }
    }
}

impl DbWork {
    /// `commits …, statements …, WAL …` per 1,000 of `payments`, for the
    /// progress lines.
    pub fn line(&self, payments: u64) -> String {
        let per = |n: u64| crate::stats::per_1000(n as f64, payments);
        let statements = self
            .statements
            .map_or_else(|| "n/a".to_owned(), |s| format!("{:.0}", per(s)));
        format!(
            "per 1,000 payments: {:.0} commits, {:.0} rollbacks, {statements} statements, \
             {:.2} MiB WAL in {:.0} records",
            per(self.commits),
            per(self.rollbacks),
            per(self.wal_bytes) / MIB,
            per(self.wal_records)
        )
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;

async fn connect(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    sqlx::PgConnection::connect(url)
        .await
        .context("connecting to the maintenance database to read PostgreSQL's statistics")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry per value of `calls`, and `dealloc`.
    fn entries(calls: &[i64], dealloc: i64) -> Option<Statements> {
        let calls = calls.iter().enumerate().map(|(i, c)| ((10, i as i64), *c));
        Some(Statements {
            calls: calls.collect(),
            dealloc,
        })
    }

    fn reading(commits: i64, statements: Option<Statements>, own: u64) -> DbReading {
        DbReading {
            at: chrono::DateTime::UNIX_EPOCH,
            commits,
            rollbacks: 1,
            statements,
            wal_bytes: 1000,
            wal_records: 10,
            wal_fpi: 0,
            own_statements: own,
            settled: true,
            settle_s: 0.5,
        }
    }

    fn stats(missing: Option<&str>) -> DbStats {
        DbStats {
            maintenance_url: String::new(),
            database: "bench".into(),
            statements_missing: missing.map(str::to_owned),
        }
    }

    #[test]
    fn the_benchs_own_polls_are_taken_out_of_commits_and_statements() {
        let work = stats(None).work(
            &reading(100, entries(&[200, 300], 0), 3),
            &reading(1100, entries(&[2200, 2300], 0), 13),
        );
        assert_eq!(work.commits, 990);
        assert_eq!(work.statements, Some(3990));
        assert_eq!(work.own_statements, 10);
        assert_eq!((work.rollbacks, work.wal_bytes), (0, 0));
    }

    #[test]
    fn statements_are_not_counted_when_the_extension_is_missing_or_evicted_entries() {
        let missing = "pg_stat_statements not loaded";
        let work = stats(Some(missing)).work(&reading(0, None, 0), &reading(10, None, 0));
        assert_eq!(work.statements, None);
        assert_eq!(work.statements_missing.as_deref(), Some(missing));
        let evicted = stats(None).work(
            &reading(0, entries(&[5, 7], 1), 0),
            &reading(10, entries(&[50], 2), 0),
        );
        assert_eq!(evicted.statements, None);
        assert!(evicted
            .statements_missing
            .is_some_and(|m| m.contains("evicted")));
    }

    /// Against the machine's PostgreSQL (`BENCH_PG_URL`, as the bench):
    /// connections that go idle right after their work keep up to a
    /// second of it unflushed for 10 s; a settled reading still counts it
    /// all. Takes two waits of about 10 s.
    #[tokio::test]
    async fn a_settled_reading_counts_the_work_of_connections_left_idle_right_after_it() {
        let server = std::env::var("BENCH_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let maintenance = format!("{server}/postgres");
        let database = format!(
            "bench_pgstats_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut admin = connect(&maintenance).await.expect("PostgreSQL is up");
        let create = format!("CREATE DATABASE {database}");
        sqlx::raw_sql(&create)
            .execute(&mut admin)
            .await
            .expect("create");
        let result = async {
            let mut setup = connect(&format!("{server}/{database}")).await?;
            sqlx::raw_sql("CREATE TABLE t (v int) WITH (autovacuum_enabled = false)")
                .execute(&mut setup)
                .await?;
            setup.close().await?;
            // Each connection reads the table once first: PostgreSQL 15
            // flushes a backend's transaction counts only with table
            // statistics, so its start (a transaction of its own) would
            // otherwise wait for the first insert and land in the window.
            let mut conns = Vec::new();
            for _ in 0..4 {
                let mut conn = connect(&format!("{server}/{database}")).await?;
                sqlx::raw_sql("SELECT count(*) FROM t")
                    .execute(&mut conn)
                    .await?;
                conns.push(conn);
            }
            let stats = DbStats::on(&maintenance, &database).await?;
            let before = stats.settled(0).await?;
            for _ in 0..25 {
                for conn in &mut conns {
                    sqlx::raw_sql("BEGIN; INSERT INTO t VALUES (1); COMMIT")
                        .execute(&mut *conn)
                        .await?;
                }
            }
            for conn in &mut conns {
                for _ in 0..10 {
                    sqlx::raw_sql("SELECT 1").execute(&mut *conn).await?;
                }
                for _ in 0..2 {
                    sqlx::raw_sql("BEGIN; INSERT INTO t VALUES (2); ROLLBACK")
                        .execute(&mut *conn)
                        .await?;
                }
            }
            let after = stats.settled(0).await?;
            for conn in conns {
                conn.close().await?;
            }
            anyhow::Ok((stats.work(&before, &after), stats.statements_missing))
        }
        .await;
        let drop = format!("DROP DATABASE {database} WITH (FORCE)");
        sqlx::raw_sql(&drop)
            .execute(&mut admin)
            .await
            .expect("drop");
        let (work, missing) = result.expect("the work and the readings");

        // Each connection's last second of work was still unflushed when it
        // went idle; without the wait the reading would miss most of it.
        // More is possible: autovacuum workers visiting the database (the
        // server's other databases make them visit often) commit there too.
        assert!(work.settled, "{work:?}");
        assert!(
            work.commits >= 4 * 35 && work.rollbacks >= 4 * 2,
            "{work:?}"
        );
        // Per connection: 25 × (BEGIN, INSERT, COMMIT), 10 SELECTs, 2 ×
        // (BEGIN, INSERT, ROLLBACK). A server without the extension, or one
        // whose table of statements overflowed meanwhile, cannot say.
        match work.statements {
            Some(n) => assert_eq!(n, 4 * (25 * 3 + 10 + 2 * 3), "{work:?}"),
            None => assert!(missing.is_some() || work.statements_missing.is_some()),
        }
        // Every insert and every commit wrote WAL (other databases' work
        // on the same server can only add to it).
        assert!(work.wal_records >= 4 * (25 * 2 + 2), "{work:?}");
    }

    #[test]
    fn entries_of_other_databases_evicted_leave_the_count_alone() {
        // dealloc moved, but every entry of ours is still there and grew;
        // a new entry counts from zero.
        let work = stats(None).work(
            &reading(0, entries(&[5, 7], 1), 0),
            &reading(10, entries(&[50, 70, 3], 4), 0),
        );
        assert_eq!(work.statements, Some(111));
    }
}
