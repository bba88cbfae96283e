//! What the numbers were measured on: CPU, memory, kernel, and the versions
//! and durability settings of PostgreSQL and RabbitMQ (a result means little
//! without `fsync` and `synchronous_commit` beside it).

use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sqlx::Connection as _;

use crate::procstat::ClockTicks;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs listed in `/proc/cpuinfo`.
    pub logical_cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub postgres_version: String,
    pub postgres_settings: Vec<(String, String)>,
    pub rabbitmq_version: String,
    pub clock_ticks: ClockTicks,
    /// 1, 5 and 15 minute load averages when the run started and ended: a
    /// busy machine before the run means disturbed numbers.
    pub load_average_start: String,
    pub load_average_end: String,
}

/// PostgreSQL settings that decide what a commit costs.
const PG_SETTINGS: &[&str] = &[
    "synchronous_commit",
    "fsync",
    "wal_sync_method",
    "shared_buffers",
    "max_connections",
];

impl Machine {
    pub async fn describe(pg_server: &str, clock_ticks: ClockTicks) -> anyhow::Result<Self> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let logical_cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());

        let url = format!("{pg_server}/postgres");
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {pg_server}"))?;
        let postgres_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await?;
        let mut postgres_settings = Vec::new();
        for name in PG_SETTINGS {
            let value: String = sqlx::query_scalar("SELECT current_setting($1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .with_context(|| format!("reading the PostgreSQL setting {name}"))?;
            postgres_settings.push(((*name).to_owned(), value));
        }
        conn.close().await.ok();

        Ok(Self {
            cpu_model,
            logical_cpus,
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel,
            postgres_version,
            postgres_settings,
            rabbitmq_version: rabbitmq_version().await,
            clock_ticks,
            load_average_start: load_average(),
            load_average_end: String::new(),
        })
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// AMQP does not tell a client the server's version in a form lapin exposes,
/// so ask `rabbitmqctl` (needs the Erlang cookie, i.e. the same user as the
/// broker or root), then the package manager.
async fn rabbitmq_version() -> String {
    let ask = |program: &'static str, args: &'static [&'static str]| async move {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(program)
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .ok()?
        .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    if let Some(v) = ask("rabbitmqctl", &["-q", "version"]).await {
        return v;
    }
    if let Some(v) = ask(
        "dpkg-query",
        &["-W", "-f", "${Version} (Debian package)", "rabbitmq-server"],
    )
    .await
    {
        return v;
    }
    "unknown".into()
}
