//! Starting and stopping the system under test: the release binaries as real
//! child processes, each scenario against its own database and queue prefix.
//!
//! Children get a cleared environment plus exactly the settings listed here,
//! so a stray `OUTBOX_RELAY_AFTER` in the caller's shell cannot change what is
//! measured. Every child is killed when its handle is dropped (an error or
//! Ctrl-C in the bench); the normal path stops it with SIGTERM so it drains.
//! Databases and queue prefixes are registered with [`Cleanup`] before they
//! are created, so they are removed even after a failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context as _};
use common::processor::{FaultsUpdate, SimStats};
use common::queue::{RetryTiers, Topology};
use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgPool};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The workers' retry tiers of payments and of webhooks (their defaults),
/// passed explicitly so the bench knows which delay queues to delete.
const RETRY_DELAYS: &str = "1,5,30,120,600";
const WEBHOOK_RETRY_DELAYS: &str = "10,60,300,1800,7200,21600,86400";

/// Every exchange and queue the services declare under `prefix`.
fn topologies(prefix: &str) -> [Topology; 2] {
    let tiers = |delays| {
        RetryTiers::parse(delays)
            .map(|t| t.to_vec())
            .unwrap_or_default()
    };
    [
        Topology::new(prefix).with_retry_delays(&tiers(RETRY_DELAYS)),
        Topology::webhooks(prefix).with_retry_delays(&tiers(WEBHOOK_RETRY_DELAYS)),
    ]
}

/// `RATE_LIMIT_PER_SECOND` and `RATE_LIMIT_BURST` of the API processes: the
/// highest the API accepts. All load comes from one key at thousands of
/// requests per second; the per-key default (100/s) would measure the
/// limiter instead of the service.
/// (`api::config::MAX_RATE`; the bench runs the binaries, not the crate.)
pub const RATE_LIMIT: u32 = 1_000_000;

/// How long a child may take to become ready, or to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What every scenario shares.
#[derive(Debug, Clone)]
pub struct Env {
    pub bin_dir: PathBuf,
    /// PostgreSQL server URL without a database name.
    pub pg_server: String,
    /// One RabbitMQ URL, or a cluster's nodes separated by commas (as
    /// `AMQP_URL`): the services get it whole, the bench's own checks use
    /// the first node.
    pub amqp_url: String,
    pub logs_dir: PathBuf,
    pub run_id: String,
    /// `DATABASE_MAX_CONNECTIONS` passed to the API and workers; `None`:
    /// each binary's own default.
    pub db_connections: Option<u32>,
    /// `WORKER_CONCURRENCY` passed to the workers; `None`: their default.
    pub worker_concurrency: Option<u32>,
    /// The API's pool size in effect (the floor's pool uses it).
    pub api_db_connections: u32,
    /// The workers' `WORKER_CONCURRENCY` in effect.
    pub effective_concurrency: u32,
}

impl Env {
    /// The first node of `amqp_url`.
    pub fn first_node(&self) -> &str {
        self.amqp_url.split(',').next().unwrap_or_default().trim()
    }

    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Fails with the build command when a release binary is missing.
    pub fn check_binaries(&self) -> anyhow::Result<()> {
        let missing: Vec<String> = ["api", "worker", "processor-sim"]
            .iter()
            .map(|name| self.binary(name))
            .filter(|path| !path.is_file())
            .map(|path| path.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "missing release binaries: {}. Build them first with `cargo build --release --bins` \
                 (or point --bin-dir / BENCH_BIN_DIR at them)",
                missing.join(", ")
            );
        }
        Ok(())
    }

    /// Database and queue prefix of one scenario: `bench_<run>_<name>`.
    pub fn scenario_name(&self, name: &str) -> String {
        format!("bench_{}_{name}", self.run_id)
    }

    pub fn database_url(&self, db: &str) -> String {
        format!("{}/{db}", self.pg_server)
    }
}

/// A free port on the loopback interface. Another process could take it
/// before the child binds it; the child then fails to start, loudly.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// A release binary with a cleared environment plus `vars`, killed when
/// dropped.
fn command(env: &Env, binary: &str, vars: &[(&str, String)]) -> Command {
    let mut command = Command::new(env.binary(binary));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true);
    command
}

/// A child process of the bench.
pub struct Proc {
    name: String,
    pub pid: u32,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(env: &Env, name: &str, binary: &str, vars: &[(&str, String)]) -> anyhow::Result<Self> {
        let log = env.logs_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("creating the log file {}", log.display()))?;
        let child = command(env, binary, vars)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("starting {}", env.binary(binary).display()))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited at once"))?;
        Ok(Self {
            name: name.to_owned(),
            pid,
            child,
            log,
        })
    }

    /// `utime + stime` so far, in ticks.
    pub fn cpu_ticks(&self) -> u64 {
        crate::procstat::process_ticks(self.pid).unwrap_or(0)
    }

    /// Peak resident set so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        crate::procstat::peak_rss_kib(self.pid).unwrap_or(0) as f64 / 1024.0
    }

    /// An error naming the log file if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited unexpectedly ({status}); see {}",
                self.name,
                self.log.display()
            ),
            Err(err) => Err(err).with_context(|| format!("checking on {}", self.name)),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_TIMEOUT`].
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // `kill(1)` rather than a libc call: the workspace forbids unsafe code.
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false);
        if sent {
            if let Ok(waited) = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
                let status = waited?;
                if !status.success() {
                    eprintln!(
                        "  note: {} exited with {status} after SIGTERM; see {}",
                        self.name,
                        self.log.display()
                    );
                }
                return Ok(());
            }
            eprintln!(
                "  note: {} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it",
                self.name
            );
        }
        self.child.kill().await.context("killing a child")?;
        Ok(())
    }
}

/// The card processor simulator, one per run, reset between scenarios.
pub struct Sim {
    proc: Proc,
    pub url: String,
    http: reqwest::Client,
}

impl Sim {
    pub async fn start(env: &Env) -> anyhow::Result<Self> {
        let port = free_port()?;
        let bind = format!("127.0.0.1:{port}");
        let mut proc = Proc::spawn(
            env,
            "processor-sim",
            "processor-sim",
            &[
                ("SIM_BIND", bind.clone()),
                ("RUST_LOG", "warn".into()),
                ("LOG_FORMAT", "text".into()),
            ],
        )?;
        let url = format!("http://{bind}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        wait_for_200(&http, &format!("{url}/healthz"), &mut proc).await?;
        Ok(Self { proc, url, http })
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    /// Clears counters and faults, then sets the charge latency.
    pub async fn prepare(&self, latency_ms: u64) -> anyhow::Result<()> {
        let url = |path: &str| format!("{}/_sim/{path}", self.url);
        let faults = FaultsUpdate {
            latency_ms: Some(latency_ms),
            ..FaultsUpdate::default()
        };
        let reset = self.http.post(url("reset")).send().await?;
        reset.error_for_status().context("POST /_sim/reset")?;
        let set = self.http.put(url("faults")).json(&faults).send().await?;
        set.error_for_status().context("PUT /_sim/faults")?;
        Ok(())
    }

    pub async fn stats(&self) -> anyhow::Result<SimStats> {
        let answer = self
            .http
            .get(format!("{}/_sim/stats", self.url))
            .send()
            .await?;
        let answer = answer.error_for_status().context("GET /_sim/stats")?;
        answer.json().await.context("decoding /_sim/stats")
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.proc.stop().await
    }
}

/// Polls `ready` `every` so often until it holds, failing if a process in `procs` exits or
/// [`START_TIMEOUT`] passes (with `failure` as the error).
async fn wait_ready<F: std::future::Future<Output = bool>>(
    procs: &mut [Proc],
    failure: &str,
    every: Duration,
    mut ready: impl FnMut() -> F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        for proc in procs.iter_mut() {
            proc.check_running()?;
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{failure}");
        }
        tokio::time::sleep(every).await;
    }
}

async fn wait_for_200(http: &reqwest::Client, url: &str, proc: &mut Proc) -> anyhow::Result<()> {
    let failure = format!(
        "{} not ready at {url} within {START_TIMEOUT:?}; see {}",
        proc.name,
        proc.log.display()
    );
    let every = Duration::from_millis(50);
    wait_ready(std::slice::from_mut(proc), &failure, every, || async {
        matches!(http.get(url).send().await, Ok(r) if r.status().is_success())
    })
    .await
}

/// One scenario's API processes and workers, on a fresh database and queue
/// prefix.
pub struct System {
    pub apis: Vec<Proc>,
    pub workers: Vec<Proc>,
    /// The first API's URL (the one reads go to).
    pub api_url: String,
    /// Every API's URL; submissions go to each in turn.
    pub api_urls: Vec<String>,
    pub key: String,
    /// The bench's own small pool on the scenario's database (progress
    /// polling and the checks).
    pub pool: PgPool,
    /// Statements the bench ran on the scenario's database while measuring
    /// (each its own transaction), subtracted from the database's counters
    /// (see [`crate::pgstats`]).
    pub own_statements: u64,
    prefix: String,
}

impl System {
    pub async fn start(
        env: &Env,
        cleanup: &Cleanup,
        sim_url: &str,
        name: &str,
        apis: usize,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let scenario = env.scenario_name(name);
        cleanup.register(&scenario);
        let database_url = env.database_url(&scenario);
        let mut common_vars = vec![
            ("DATABASE_URL", database_url.clone()),
            ("AMQP_URL", env.amqp_url.clone()),
            ("QUEUE_PREFIX", scenario.clone()),
            // The bench's own systems register no webhook endpoint; the
            // services still need the setting to start.
            (
                "SECRETS_KEY",
                "YmVuY2gta2V5LW9ubHktZm9yLWl0cy1vd24tc3lzdG0=".into(),
            ),
            // Logging costs CPU; warnings still show anything wrong.
            ("RUST_LOG", "warn".into()),
            ("LOG_FORMAT", "text".into()),
        ];
        // Unless told otherwise, each binary runs with its own default.
        common_vars.extend(
            env.db_connections
                .map(|n| ("DATABASE_MAX_CONNECTIONS", n.to_string())),
        );

        // Creates the database, applies the migrations, prints the secret last.
        let key = create_key(env, &common_vars).await?;

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let (mut api_procs, mut api_urls) = (Vec::new(), Vec::new());
        for i in 1..=apis.max(1) {
            let bind = format!("127.0.0.1:{}", free_port()?);
            let api_url = format!("http://{bind}");
            let api_vars = [
                ("API_BIND", bind),
                ("PUBLIC_BASE_URL", api_url.clone()),
                ("RATE_LIMIT_PER_SECOND", RATE_LIMIT.to_string()),
                ("RATE_LIMIT_BURST", RATE_LIMIT.to_string()),
            ];
            let api_vars = [common_vars.clone(), api_vars.to_vec()].concat();
            let label = if apis > 1 {
                format!("{name}-api{i}")
            } else {
                format!("{name}-api")
            };
            let mut api = Proc::spawn(env, &label, "api", &api_vars)?;
            wait_for_200(&http, &format!("{api_url}/readyz"), &mut api).await?;
            api_procs.push(api);
            api_urls.push(api_url);
        }

        let mut worker_vars = common_vars;
        worker_vars.extend([
            ("PROCESSOR_URL", sim_url.to_owned()),
            // Port 0: several workers on one machine, metrics unused here.
            ("METRICS_BIND", "127.0.0.1:0".into()),
            ("RETRY_DELAYS", RETRY_DELAYS.into()),
            ("WEBHOOK_RETRY_DELAYS", WEBHOOK_RETRY_DELAYS.into()),
            ("SHUTDOWN_TIMEOUT", "10".into()),
        ]);
        worker_vars.extend(
            env.worker_concurrency
                .map(|n| ("WORKER_CONCURRENCY", n.to_string())),
        );
        let mut procs = (1..=workers)
            .map(|i| Proc::spawn(env, &format!("{name}-worker{i}"), "worker", &worker_vars))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if workers > 0 {
            wait_for_consumers(env, &scenario, workers, &mut procs).await?;
        }

        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&database_url)
            .await
            .context("connecting the bench's pool to the scenario database")?;
        Ok(Self {
            apis: api_procs,
            workers: procs,
            api_url: api_urls[0].clone(),
            api_urls,
            key,
            pool,
            own_statements: 0,
            prefix: scenario,
        })
    }

    /// The scenario's database (also its queue prefix).
    pub fn database(&self) -> &str {
        &self.prefix
    }

    pub fn worker_ticks(&self) -> u64 {
        self.workers.iter().map(Proc::cpu_ticks).sum()
    }

    pub fn api_ticks(&self) -> u64 {
        self.apis.iter().map(Proc::cpu_ticks).sum()
    }

    /// The largest peak resident size among the API processes.
    pub fn api_peak_rss_mib(&self) -> f64 {
        self.apis.iter().map(Proc::peak_rss_mib).fold(0.0, f64::max)
    }

    /// Errors if any child has died.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for api in &mut self.apis {
            api.check_running()?;
        }
        for worker in &mut self.workers {
            worker.check_running()?;
        }
        Ok(())
    }

    /// Messages ready in the main queue (a passive declare).
    pub async fn queue_depth(&self, env: &Env) -> anyhow::Result<u32> {
        let (messages, _) = queue_counts(env, &Topology::new(&self.prefix).process_queue()).await?;
        Ok(messages)
    }

    /// Stops workers then the API (SIGTERM, so they drain), then removes
    /// the database and the queues.
    pub async fn stop(self, env: &Env, cleanup: &Cleanup) -> anyhow::Result<()> {
        for worker in self.workers {
            worker.stop().await?;
        }
        for api in self.apis {
            api.stop().await?;
        }
        self.pool.close().await;
        drop_database(env, &self.prefix).await?;
        delete_queues(env, &self.prefix).await?;
        cleanup.forget(&self.prefix);
        Ok(())
    }
}

async fn create_key(env: &Env, vars: &[(&str, String)]) -> anyhow::Result<String> {
    let out = command(env, "api", vars)
        .args([
            "keys",
            "create",
            "--name",
            "bench",
            "--scopes",
            "payments:read,payments:write",
        ])
        .output()
        .await
        .with_context(|| format!("running {} keys create", env.binary("api").display()))?;
    if !out.status.success() {
        bail!(
            "`api keys create` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .context("`api keys create` printed no secret")
}

/// Ready messages and consumers of a queue, by a passive declare on a fresh
/// connection (a failed passive declare closes its channel).
async fn queue_counts(env: &Env, queue: &str) -> anyhow::Result<(u32, u32)> {
    let conn = lapin::Connection::connect(env.first_node(), lapin::ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let result = async {
        let channel = conn.create_channel().await?;
        let declared = channel
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((declared.message_count(), declared.consumer_count()))
    }
    .await;
    let _ = conn.close(200, "done").await;
    result.with_context(|| format!("inspecting queue {queue}"))
}

async fn wait_for_consumers(
    env: &Env,
    prefix: &str,
    workers: usize,
    procs: &mut [Proc],
) -> anyhow::Result<()> {
    let queue = Topology::new(prefix).process_queue();
    let failure = format!(
        "{workers} workers did not all consume {queue} within {START_TIMEOUT:?}; see {}",
        env.logs_dir.display()
    );
    wait_ready(procs, &failure, Duration::from_millis(100), || async {
        matches!(queue_counts(env, &queue).await, Ok((_, n)) if n as usize >= workers)
    })
    .await
}

pub async fn drop_database(env: &Env, name: &str) -> anyhow::Result<()> {
    let mut admin = sqlx::PgConnection::connect(&env.database_url("postgres"))
        .await
        .context("connecting to PostgreSQL to drop a database")?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    // FORCE: a child killed mid-run may leave connections behind.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping database {name}"))?;
    admin.close().await.ok();
    Ok(())
}

/// Deletes the exchanges and every queue of a prefix. Each deletion gets
/// its own channel: deleting a queue that was never declared (no worker ran,
/// so no retry tiers) is an error that closes the channel.
pub async fn delete_queues(env: &Env, prefix: &str) -> anyhow::Result<()> {
    let conn = lapin::Connection::connect(env.first_node(), lapin::ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ to delete queues")?;
    for topology in topologies(prefix) {
        for queue in &topology.queues() {
            if let Ok(channel) = conn.create_channel().await {
                let _ = channel
                    .queue_delete(queue, QueueDeleteOptions::default())
                    .await;
            }
        }
        if let Ok(channel) = conn.create_channel().await {
            let _ = channel
                .exchange_delete(topology.exchange(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "done").await;
    Ok(())
}

/// Names (a database and the queue prefix of the same name) to remove at
/// the end even if the run fails part-way.
#[derive(Debug, Default)]
pub struct Cleanup {
    names: Mutex<BTreeSet<String>>,
}

impl Cleanup {
    fn names(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, name: &str) {
        self.names().insert(name.to_owned());
    }

    /// Already removed by the normal path.
    pub fn forget(&self, name: &str) {
        self.names().remove(name);
    }

    /// Drops whatever is left; reports but does not fail.
    pub async fn run(&self, env: &Env) {
        let names = std::mem::take(&mut *self.names());
        for name in names {
            if let Err(err) = drop_database(env, &name).await {
                eprintln!("cleanup: {err:#}");
            }
            if let Err(err) = delete_queues(env, &name).await {
                eprintln!("cleanup: {err:#}");
            }
        }
    }
}

/// Where the bench's child logs go for one run.
pub fn logs_dir(run_id: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bench-{run_id}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `<workspace>/target/release`, or `$CARGO_TARGET_DIR/release`.
pub fn default_bin_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("release")
}
