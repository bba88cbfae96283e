//! `bench`: throughput and tail latency of the whole payment system, each
//! number beside this machine's own limit.
//!
//! It runs the release binaries (`api`, `worker`, `processor-sim`) as real
//! processes, each scenario on a fresh database and queue prefix, and
//! measures in one run: the **floor** (PostgreSQL and RabbitMQ doing one
//! payment's work through `common::db` and `common::queue`, and pgbench),
//! the **accept path** (open-loop `POST /v1/payments` at several rates),
//! **end to end** (workers × processor latencies, then a steady phase at
//! half the measured rate) and the **list** (`GET /v1/payments` over a
//! million payments). It writes `benchmarks.json`, `benchmarks.md` and
//! `accept-latency.svg` (to `docs/` by default) and exits non-zero if any
//! payment was lost or charged twice. The page and chart are a function of
//! the JSON alone: `--report-from docs/benchmarks.json` rewrites them.
//!
//! The API gets `RATE_LIMIT_PER_SECOND` and `RATE_LIMIT_BURST` at their
//! highest ([`system::RATE_LIMIT`]): the load comes from one API key, and
//! the bench measures the service, not the rate limiter.
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p bench            # full run, writes docs/
//! cargo run --release -p bench -- --smoke # CI
//! ```

mod chart;
mod floor;
mod list;
mod load;
mod machine;
mod pgbench;
mod pgstats;
mod procstat;
mod report;
mod scenarios;
mod stats;
mod system;
mod template;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::procstat::ClockTicks;
use crate::scenarios::Harness;
use crate::system::{Cleanup, Env, Sim};

/// Offered rate of the steady phase, as a share of the rate the same system
/// reached working off the burst: clearly sustainable, so its latencies are
/// those of a system keeping up, not of a queue.
const STEADY_FRACTION: f64 = 0.5;

/// Throughput and tail-latency benchmark of the payment system.
///
/// Build the services first: `cargo build --release --bins`. Needs
/// PostgreSQL and RabbitMQ (the machine's own by default). Every scenario
/// runs against its own database and queue prefix (`bench_<run>_…`), all
/// removed at the end.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Args {
    /// A small run for CI: a few hundred payments, one short rate step, one
    /// worker, processor latency 0. Checks that no payment is lost or
    /// charged twice; asserts nothing about time. Writes its results to a
    /// temporary directory unless --out-dir is given.
    #[arg(long)]
    smoke: bool,

    /// Offered rates of the accept path, requests per second
    /// [default: 250,500,1000,2000,4000; 100 with --smoke].
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<f64>>,

    /// Seconds per accept-path rate step [default: 5; 2 with --smoke].
    #[arg(long)]
    step_secs: Option<f64>,

    /// Payments per end-to-end scenario and per floor run
    /// [default: 20000; 300 with --smoke].
    #[arg(long)]
    payments: Option<u64>,

    /// Worker process counts of the end-to-end scenarios
    /// [default: 1,2,4; 1 with --smoke].
    #[arg(long, value_delimiter = ',')]
    workers: Option<Vec<usize>>,

    /// API processes of every end-to-end scenario; the load is spread over
    /// them in turn, as a load balancer would (the accept path always
    /// measures one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    apis: u8,

    /// Processor latencies of the end-to-end scenarios, in ms
    /// [default: 0,50,300,1000; 0 with --smoke].
    #[arg(long, value_delimiter = ',')]
    latencies_ms: Option<Vec<u64>>,

    /// Seconds of the open-loop phase at a sustainable rate after each
    /// end-to-end burst [default: 10; 2 with --smoke].
    #[arg(long)]
    steady_secs: Option<f64>,

    /// Payments of the one merchant whose list `GET /v1/payments` reads
    /// [default: 1000000; 20000 with --smoke]; 0 skips the list benchmark.
    #[arg(long)]
    list_payments: Option<u64>,

    /// Timed requests per case of the list benchmark [default: 300; 50 with
    /// --smoke].
    #[arg(long)]
    list_requests: Option<usize>,

    /// Run only the list benchmark and print its section of the report.
    #[arg(long)]
    list_only: bool,

    /// Measure nothing: read a `benchmarks.json` a run wrote and write the
    /// report (benchmarks.json, benchmarks.md, accept-latency.svg) from it
    /// to --out-dir.
    #[arg(long, value_name = "JSON")]
    report_from: Option<PathBuf>,

    /// WORKER_CONCURRENCY of every worker (also its prefetch, and the floor
    /// consumers' prefetch) [default: the worker's own default].
    #[arg(long)]
    worker_concurrency: Option<u32>,

    /// DATABASE_MAX_CONNECTIONS of the API and each worker, and the floor's
    /// pool size [default: each binary's own default; the floor uses the
    /// API's].
    #[arg(long)]
    db_connections: Option<u32>,

    /// Payments in flight while submitting end to end; also the top level of
    /// the floor's in-flight sweep.
    #[arg(long, default_value_t = 64)]
    submit_in_flight: usize,

    /// Give up on an end-to-end scenario when no payment has finished for
    /// this many seconds (a liveness bound, not a performance assertion).
    #[arg(long, default_value_t = 120)]
    stall_secs: u64,

    /// Directory of the release binaries [default: target/release of this
    /// workspace, or $CARGO_TARGET_DIR/release].
    #[arg(long, env = "BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,

    /// Where to write benchmarks.json, benchmarks.md and accept-latency.svg
    /// [default: docs/ of this workspace; a temporary directory with
    /// --smoke].
    #[arg(long)]
    out_dir: Option<PathBuf>,

    /// PostgreSQL server URL, without a database name.
    #[arg(
        long,
        env = "BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pg_url: String,

    /// RabbitMQ URL.
    #[arg(
        long,
        env = "BENCH_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
}

fn one() -> usize {
    1
}

/// What a run measures, with the defaults resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub rates: Vec<f64>,
    pub step_secs: f64,
    pub payments: u64,
    pub workers: Vec<usize>,
    /// API processes of every end-to-end scenario (submissions spread over
    /// them in turn); 1 in runs that predate the setting.
    #[serde(default = "one")]
    pub apis: usize,
    pub latencies_ms: Vec<u64>,
    pub steady_secs: f64,
    pub steady_fraction: f64,
    /// `WORKER_CONCURRENCY` in effect (the worker's default unless given).
    pub worker_concurrency: u32,
    /// Whether the settings below were the binaries' defaults (not passed).
    pub worker_concurrency_is_default: bool,
    /// `DATABASE_MAX_CONNECTIONS` in effect for the API and for each worker.
    pub api_db_connections: u32,
    pub worker_db_connections: u32,
    pub db_connections_are_defaults: bool,
    pub submit_in_flight: usize,
    pub warmup_requests: u64,
    pub list_payments: u64,
    pub list_requests: usize,
}

impl Plan {
    /// The defaults are a full run's, or with `--smoke` one sized for CI.
    fn from_args(args: &Args) -> anyhow::Result<Self> {
        let s = args.smoke;
        fn pick<T>(smoke: bool, full: T, small: T) -> T {
            if smoke {
                small
            } else {
                full
            }
        }
        let plan = Self {
            rates: args.rates.clone().unwrap_or_else(|| {
                pick(s, vec![250.0, 500.0, 1000.0, 2000.0, 4000.0], vec![100.0])
            }),
            step_secs: args.step_secs.unwrap_or(pick(s, 5.0, 2.0)),
            payments: args.payments.unwrap_or(pick(s, 20_000, 300)),
            workers: args
                .workers
                .clone()
                .unwrap_or_else(|| pick(s, vec![1, 2, 4], vec![1])),
            apis: usize::from(args.apis),
            latencies_ms: args
                .latencies_ms
                .clone()
                .unwrap_or_else(|| pick(s, vec![0, 50, 300, 1000], vec![0])),
            steady_secs: args.steady_secs.unwrap_or(pick(s, 10.0, 2.0)),
            steady_fraction: STEADY_FRACTION,
            worker_concurrency: args
                .worker_concurrency
                .unwrap_or(u32::from(worker::DEFAULT_CONCURRENCY)),
            worker_concurrency_is_default: args.worker_concurrency.is_none(),
            api_db_connections: args
                .db_connections
                .unwrap_or(common::config::DEFAULT_MAX_CONNECTIONS),
            worker_db_connections: args
                .db_connections
                .unwrap_or(worker::DEFAULT_DATABASE_CONNECTIONS),
            db_connections_are_defaults: args.db_connections.is_none(),
            submit_in_flight: args.submit_in_flight,
            warmup_requests: pick(s, 500, 20),
            // The list benchmark: the issue asks for a million payments.
            list_payments: args.list_payments.unwrap_or(pick(s, 1_000_000, 20_000)),
            list_requests: args.list_requests.unwrap_or(pick(s, 300, 50)),
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let checks = [
            (
                !plan.rates.is_empty() && plan.rates.iter().all(|r| positive(*r)),
                "--rates must be positive numbers",
            ),
            (positive(plan.step_secs), "--step-secs must be positive"),
            (plan.payments > 0, "--payments must be at least 1"),
            (
                !plan.workers.is_empty() && !plan.workers.contains(&0),
                "--workers must list worker counts of at least 1",
            ),
            (
                !plan.latencies_ms.is_empty(),
                "--latencies-ms must list at least one latency",
            ),
            (
                (1..=u32::from(u16::MAX)).contains(&plan.worker_concurrency),
                "--worker-concurrency must be 1 to 65535",
            ),
            (
                plan.api_db_connections > 0
                    && plan.worker_db_connections > 0
                    && plan.submit_in_flight > 0,
                "--db-connections and --submit-in-flight must be at least 1",
            ),
            (
                plan.steady_secs.is_finite() && plan.steady_secs >= 0.0,
                "--steady-secs must be 0 or more",
            ),
        ];
        if let Some((_, message)) = checks.iter().find(|(ok, _)| !ok) {
            bail!("{message}");
        }
        Ok(plan)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: correctness checks FAILED (see above)");
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn workspace_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

/// The command line that reproduces this run.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=,./:".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect();
    if args.is_empty() {
        "cargo run --release -p bench".into()
    } else {
        format!("cargo run --release -p bench -- {}", args.join(" "))
    }
}

/// Returns whether every correctness check passed.
async fn run(args: Args) -> anyhow::Result<bool> {
    let plan = Plan::from_args(&args)?;
    let workspace = workspace_dir();
    if let Some(json) = &args.report_from {
        let text =
            std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
        let mut report: report::Report =
            serde_json::from_str(&text).with_context(|| format!("decoding {}", json.display()))?;
        report.judge();
        let out_dir = args
            .out_dir
            .clone()
            .unwrap_or_else(|| workspace.join("docs"));
        report.write(&out_dir)?;
        println!(
            "report of {} written to {}",
            json.display(),
            out_dir.display()
        );
        return Ok(report.passed());
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let env = Env {
        bin_dir: args
            .bin_dir
            .clone()
            .unwrap_or_else(|| system::default_bin_dir(&workspace)),
        pg_server: args.pg_url.trim_end_matches('/').to_owned(),
        amqp_url: args.amqp_url.clone(),
        logs_dir: system::logs_dir(&run_id)?,
        run_id: run_id.clone(),
        db_connections: args.db_connections,
        worker_concurrency: args.worker_concurrency,
        api_db_connections: plan.api_db_connections,
        effective_concurrency: plan.worker_concurrency,
    };
    env.check_binaries()?;
    if cfg!(debug_assertions) {
        eprintln!(
            "bench: warning: this is a debug build of the load generator; use `cargo run --release -p bench`"
        );
    }
    let out_dir = match (&args.out_dir, args.smoke) {
        (Some(dir), _) => dir.clone(),
        (None, false) => workspace.join("docs"),
        (None, true) => std::env::temp_dir().join(format!("bench-smoke-{run_id}")),
    };
    eprintln!(
        "bench: run {run_id} ({}), binaries in {}, child logs in {}",
        if args.smoke { "smoke" } else { "full" },
        env.bin_dir.display(),
        env.logs_dir.display()
    );

    let cleanup = Cleanup::default();
    if args.list_only {
        return list_only(&env, &cleanup, &plan).await;
    }
    let started = Instant::now();
    let outcome = tokio::select! {
        outcome = measure(&env, &cleanup, &plan, args.smoke, Duration::from_secs(args.stall_secs)) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Children were killed when their handles dropped; remove what is left.
    cleanup.run(&env).await;
    let mut report = outcome?;
    report.duration_s = started.elapsed().as_secs_f64();
    report.machine.load_average_end = machine::load_average();
    report.write(&out_dir)?;

    println!();
    for t in &report.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!("target {}: {} ({verdict})", t.target, t.measured);
    }
    for note in report
        .notes
        .iter()
        .filter(|n| n.starts_with(report::WARNING))
    {
        println!("{}", note.replace("**", ""));
    }
    for c in report.checks.iter().filter(|c| !c.passed) {
        println!("FAILED [{}] {}: {}", c.scenario, c.what, c.detail);
    }
    println!(
        "results: {} ({} of {} checks passed, {:.0} s)",
        out_dir.display(),
        report.checks.iter().filter(|c| c.passed).count(),
        report.checks.len(),
        report.duration_s
    );
    Ok(report.passed())
}

async fn measure(
    env: &Env,
    cleanup: &Cleanup,
    plan: &Plan,
    smoke: bool,
    stall: Duration,
) -> anyhow::Result<report::Report> {
    let clk = ClockTicks::detect();
    let machine = machine::Machine::describe(&env.pg_server, clk).await?;
    eprintln!(
        "bench: {} × {}, {:.1} GiB, PostgreSQL {}, RabbitMQ {}, load {}",
        machine.logical_cpus,
        machine.cpu_model,
        machine.memory_gib,
        machine.postgres_version,
        machine.rabbitmq_version,
        machine.load_average_start
    );

    let max_workers = plan.workers.iter().copied().max().unwrap_or(1);
    let floor = floor::run(
        env,
        cleanup,
        clk,
        plan.payments,
        plan.submit_in_flight,
        max_workers,
    )
    .await
    .context("measuring the floor")?;

    let sim = Sim::start(env).await?;
    let harness = Harness {
        env,
        cleanup,
        clk,
        sim: &sim,
        plan,
        stall,
    };
    let mut checks = Vec::new();
    let accept = scenarios::accept_path(&harness, &mut checks)
        .await
        .context("measuring the accept path")?;
    let mut e2e = Vec::new();
    for &latency_ms in &plan.latencies_ms {
        for &workers in &plan.workers {
            let run = scenarios::end_to_end(&harness, workers, latency_ms, &mut checks).await;
            e2e.push(run.with_context(|| {
                format!("end to end with {workers} workers, processor latency {latency_ms} ms")
            })?);
        }
    }
    let list = if plan.list_payments > 0 {
        Some(
            list::run(
                env,
                cleanup,
                plan.list_payments,
                plan.list_requests,
                &mut checks,
            )
            .await
            .context("measuring the list")?,
        )
    } else {
        None
    };
    sim.stop().await?;

    let mut report = report::Report {
        generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        mode: if smoke { "smoke" } else { "full" }.into(),
        command: command_line(),
        duration_s: 0.0,
        plan: plan.clone(),
        notes: Vec::new(),
        machine,
        floor,
        accept,
        end_to_end: e2e,
        targets: Vec::new(),
        checks,
        list,
        logs_dir: env.logs_dir.display().to_string(),
    };
    report.judge();
    Ok(report)
}

/// `--list-only`: the list benchmark alone, its report section on stdout.
async fn list_only(env: &Env, cleanup: &Cleanup, plan: &Plan) -> anyhow::Result<bool> {
    let mut checks = Vec::new();
    let outcome = list::run(
        env,
        cleanup,
        plan.list_payments.max(1),
        plan.list_requests,
        &mut checks,
    )
    .await;
    cleanup.run(env).await;
    let result = outcome?;
    // The section, then a blank line, as the page has it.
    println!("{}\n\n", result.markdown());
    for c in &checks {
        println!(
            "[{}] {}: {} ({})",
            c.scenario,
            c.what,
            if c.passed { "passed" } else { "FAILED" },
            c.detail
        );
    }
    Ok(checks.iter().all(|c| c.passed))
}
