//! The measured scenarios: the accept path under open-loop load, and the
//! end-to-end runs. Each starts its own system (fresh database, queue
//! prefix and processes), so CPU and peak memory belong to that scenario
//! alone, and tables of the same size are compared.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::bail;
use common::processor::SimStats;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::load::{self, SubmitOutcome, Target};
use crate::pgstats::{DbStats, DbWork};
use crate::procstat::{ClockTicks, CpuSnapshot, CpuUsage};
use crate::stats::{ms, per_1000, Percentiles};
use crate::system::{Cleanup, Env, Sim, System};
use crate::Plan;

/// How often the end-to-end run counts terminal payments: the resolution of
/// "time until all are terminal".
const POLL: Duration = Duration::from_millis(100);
/// Pause between open-loop steps so one step's tail does not land in the
/// next.
const SETTLE: Duration = Duration::from_secs(1);

/// What every scenario runs against.
pub struct Harness<'a> {
    pub env: &'a Env,
    pub cleanup: &'a Cleanup,
    pub clk: ClockTicks,
    pub sim: &'a Sim,
    pub plan: &'a Plan,
    /// Give up on an end-to-end scenario when no payment finished for this
    /// long (a liveness bound, not a performance assertion).
    pub stall: Duration,
}

/// A pass/fail fact about the run's correctness (never about speed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub scenario: String,
    pub what: String,
    pub passed: bool,
    pub detail: String,
}

pub fn check(scenario: &str, what: &str, passed: bool, detail: String) -> Check {
    Check {
        scenario: scenario.to_owned(),
        what: what.to_owned(),
        passed,
        detail,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptStep {
    pub offered_per_s: f64,
    pub duration_s: f64,
    pub scheduled: u64,
    pub accepted: u64,
    pub error_count: u64,
    pub errors: BTreeMap<String, u64>,
    /// `202`s per second from the first slot to the last answer.
    pub achieved_per_s: f64,
    /// Of the `202`s, from their intended send time.
    pub latency: Option<Percentiles>,
    pub spawn_lag_mean_ms: f64,
    pub spawn_lag_max_ms: f64,
    pub max_in_flight: usize,
    pub api_cpu_s_per_1000: f64,
    pub cpu: CpuUsage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptResult {
    pub workers: usize,
    pub warmup_requests: u64,
    pub steps: Vec<AcceptStep>,
    pub api_peak_rss_mib: f64,
}

/// CPU counters with the scenario's own processes: the API, and the
/// workers and processor-sim when they take part.
fn snapshot(sys: &System, sim: Option<&Sim>) -> CpuSnapshot {
    let mut snapshot = CpuSnapshot::take();
    snapshot.add("api", sys.api_ticks());
    if let Some(sim) = sim {
        snapshot.add("workers", sys.worker_ticks());
        snapshot.add("processor-sim", sim.proc().cpu_ticks());
    }
    snapshot
}

/// `p50 … p99 … p99.9 …` for the progress lines.
fn tail(l: Option<Percentiles>) -> String {
    let p = |f: fn(&Percentiles) -> f64| ms(l.as_ref().map(f));
    format!(
        "p50 {} p99 {} p99.9 {}",
        p(|l| l.p50_ms),
        p(|l| l.p99_ms),
        p(|l| l.p999_ms)
    )
}

/// Open-loop steps at each rate against an API with no workers running:
/// the accept path alone (insert + publish with confirm), without workers
/// competing for the same two cores. The queue simply grows.
pub async fn accept_path(h: &Harness<'_>, checks: &mut Vec<Check>) -> anyhow::Result<AcceptResult> {
    let (env, cleanup, clk) = (h.env, h.cleanup, h.clk);
    let (rates, warmup) = (&h.plan.rates, h.plan.warmup_requests);
    let step = Duration::from_secs_f64(h.plan.step_secs);
    let mut sys = System::start(env, cleanup, &h.sim.url, "accept", 1, 0).await?;
    let client = load::client()?;
    let target = Target::new(&sys.api_urls, &sys.key);

    eprintln!("[accept] warm-up: {warmup} requests");
    let warm = load::submit_bounded(client.clone(), target.clone(), warmup, 16).await;
    let mut accepted_total = warm.ok;
    crate::floor::analyze(&sys.pool).await?;

    let mut steps = Vec::with_capacity(rates.len());
    for &rate in rates {
        let before = snapshot(&sys, None);
        let outcome = load::open_loop(&client, &target, rate, step).await?;
        let after = snapshot(&sys, None);
        sys.check_running()?;
        let cpu = before.usage_until(&after, clk);
        let mut latencies = outcome.ok_latencies_ms;
        let latency = Percentiles::of(&mut latencies);
        let error_count = outcome.errors.values().sum();
        accepted_total += outcome.ok;
        let result = AcceptStep {
            offered_per_s: rate,
            duration_s: step.as_secs_f64(),
            scheduled: outcome.scheduled,
            accepted: outcome.ok,
            error_count,
            errors: outcome.errors,
            achieved_per_s: outcome.ok as f64 / outcome.elapsed.as_secs_f64().max(1e-9),
            latency,
            spawn_lag_mean_ms: outcome.spawn_lag_mean_ms,
            spawn_lag_max_ms: outcome.spawn_lag_max_ms,
            max_in_flight: outcome.max_in_flight,
            api_cpu_s_per_1000: per_1000(cpu.part("api"), outcome.ok),
            cpu,
        };
        eprintln!(
            "[accept] {rate:.0} req/s offered: {:.0} achieved, {}, {} errors; {}",
            result.achieved_per_s,
            tail(latency),
            error_count,
            result.cpu.cores_line()
        );
        steps.push(result);
        tokio::time::sleep(SETTLE).await;
    }

    // Every 202 must have its row, and its message must reach the queue
    // (at once, or through the outbox relay within a few seconds).
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&sys.pool)
        .await?;
    checks.push(check(
        "accept",
        "every accepted payment is stored",
        rows >= i64::try_from(accepted_total).unwrap_or(i64::MAX),
        format!("{accepted_total} answered 202, {rows} rows"),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let depth = loop {
        let depth = sys.queue_depth(env).await?;
        if u64::from(depth) >= accepted_total || Instant::now() > deadline {
            break depth;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    checks.push(check(
        "accept",
        "every accepted payment's message reached the queue",
        u64::from(depth) >= accepted_total,
        format!("{accepted_total} answered 202, {depth} messages queued"),
    ));

    let api_peak_rss_mib = sys.api_peak_rss_mib();
    sys.stop(env, cleanup).await?;
    Ok(AcceptResult {
        workers: 0,
        warmup_requests: warmup,
        steps,
        api_peak_rss_mib,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct E2eResult {
    pub workers: usize,
    pub processor_latency_ms: u64,
    pub worker_concurrency: u32,
    pub payments: u64,
    pub accepted: u64,
    pub submit_errors: BTreeMap<String, u64>,
    pub submit_in_flight: usize,
    /// Payments run end to end before measuring, not counted below.
    pub warmup: u64,
    pub submit_s: f64,
    /// First request to the poll that found every accepted payment terminal
    /// (`None`: they never all got there).
    pub all_terminal_s: Option<f64>,
    pub payments_per_s: f64,
    /// `finished_at - created_at` of every terminal payment of the burst.
    pub accept_to_terminal: Option<Percentiles>,
    /// Payments of the burst each worker finished (in start order).
    pub per_worker: Vec<u64>,
    pub statuses: BTreeMap<String, i64>,
    pub sim: SimStats,
    pub cpu: CpuUsage,
    pub api_cpu_s_per_1000: f64,
    pub worker_cpu_s_per_1000: f64,
    pub api_peak_rss_mib: f64,
    /// The largest of the workers' peaks.
    pub worker_peak_rss_mib: f64,
    /// Every worker's peak, in start order.
    pub worker_peaks_rss_mib: Vec<f64>,
    /// Little's law with a slow processor: at most `workers × concurrency`
    /// charges in flight, each taking the processor latency.
    pub concurrency_limit_per_s: Option<f64>,
    /// The open-loop phase at a sustainable rate after the burst.
    pub steady: Option<SteadyResult>,
    /// What PostgreSQL did over the burst (the CPU's window). `None` in
    /// results written before the bench counted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DbWork>,
}

/// Payments offered at a fixed rate the system keeps up with, after the
/// burst: accept→terminal latency without a backlog in front.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SteadyResult {
    pub offered_per_s: f64,
    pub duration_s: f64,
    pub scheduled: u64,
    pub accepted: u64,
    pub errors: BTreeMap<String, u64>,
    /// After the last request's slot, until every payment was terminal.
    pub drained_after_s: Option<f64>,
    pub accept_to_terminal: Option<Percentiles>,
    pub per_worker: Vec<u64>,
    pub cpu: CpuUsage,
    pub worker_cpu_s_per_1000: f64,
    /// What PostgreSQL did over the steady phase (`None` in older results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DbWork>,
}

/// Payments finished that were created in `[$1, $2)` (`$2` null: no end).
const CREATED_IN: &str = "FROM payments WHERE finished_at IS NOT NULL AND created_at >= $1
    AND ($2::timestamptz IS NULL OR created_at < $2)";

type Since = chrono::DateTime<chrono::Utc>;

/// Accept→terminal of the payments created in `[from, until)`. Like every
/// query of the bench on the scenario's database while it measures, it
/// counts itself in `own_statements`.
async fn latencies_of(
    sys: &mut System,
    from: Since,
    until: Option<Since>,
) -> anyhow::Result<Option<Percentiles>> {
    let sql = format!(
        "SELECT (EXTRACT(EPOCH FROM (finished_at - created_at)) * 1000)::float8 {CREATED_IN}"
    );
    let mut latencies: Vec<f64> = sqlx::query_scalar(&sql)
        .bind(from)
        .bind(until)
        .fetch_all(&sys.pool)
        .await?;
    sys.own_statements += 1;
    Ok(Percentiles::of(&mut latencies))
}

/// How many payments created in `[from, until)` each worker finished, in
/// the workers' start order. A worker's id carries its process id.
async fn per_worker(
    sys: &mut System,
    from: Since,
    until: Option<Since>,
) -> anyhow::Result<Vec<u64>> {
    let sql = format!("SELECT claimed_by, count(*) {CREATED_IN} GROUP BY claimed_by");
    let rows: Vec<(Option<String>, i64)> = sqlx::query_as(&sql)
        .bind(from)
        .bind(until)
        .fetch_all(&sys.pool)
        .await?;
    sys.own_statements += 1;
    let mut counts = vec![0_u64; sys.workers.len()];
    for (claimer, n) in rows {
        let pid = claimer
            .as_deref()
            .and_then(|id| id.split(':').nth(2))
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(i) = pid.and_then(|pid| sys.workers.iter().position(|w| w.pid == pid)) {
            counts[i] += n.unsigned_abs();
        }
    }
    Ok(counts)
}

/// Polls every [`POLL`] until `expected()` gives a count and at least that
/// many payments are terminal; returns the time since `started`, or `None`
/// if no payment finished for `stall`.
async fn wait_terminal(
    sys: &mut System,
    started: Instant,
    stall: Duration,
    expected: impl Fn() -> Option<i64>,
) -> anyhow::Result<Option<Duration>> {
    let mut progress = (-1_i64, Instant::now());
    loop {
        let terminal: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payments WHERE status IN ('succeeded', 'failed')",
        )
        .fetch_one(&sys.pool)
        .await?;
        sys.own_statements += 1;
        if expected().is_some_and(|n| terminal >= n) {
            return Ok(Some(started.elapsed()));
        }
        if terminal != progress.0 {
            progress = (terminal, Instant::now());
        } else if progress.1.elapsed() > stall {
            eprintln!("no payment finished for {stall:?}; giving up");
            return Ok(None);
        }
        sys.check_running()?;
        tokio::time::sleep(POLL).await;
    }
}

/// Submits `payments` as fast as the API takes them and waits until every
/// accepted one is terminal; then offers payments at a sustainable rate for
/// the steady phase and waits for those too.
pub async fn end_to_end(
    h: &Harness<'_>,
    workers: usize,
    latency_ms: u64,
    checks: &mut Vec<Check>,
) -> anyhow::Result<E2eResult> {
    let (env, cleanup, clk, sim, plan) = (h.env, h.cleanup, h.clk, h.sim, h.plan);
    let (payments, in_flight, stall) = (plan.payments, plan.submit_in_flight, h.stall);
    let steady_for = Duration::from_secs_f64(plan.steady_secs);
    // Payments run end to end before measuring.
    let warmup = (payments / 20).clamp(20, 1000);
    let apis = plan.apis;
    let name = if apis > 1 {
        format!("e2e_a{apis}_w{workers}_l{latency_ms}")
    } else {
        format!("e2e_w{workers}_l{latency_ms}")
    };
    let mut sys = System::start(env, cleanup, &sim.url, &name, apis, workers).await?;
    sim.prepare(latency_ms).await?;
    let client = load::client()?;
    let target = Target::new(&sys.api_urls, &sys.key);
    eprintln!(
        "[{name}] {} payments, {} workers × {}, processor latency {} ms",
        payments, workers, env.effective_concurrency, latency_ms
    );

    // Warm-up, not measured: connections and prepared statements of the
    // API and the workers, and planner statistics of tables that are not
    // empty (see `floor::analyze`). Everything below counts only what comes
    // after it.
    let warm = load::submit_bounded(client.clone(), target.clone(), warmup, 16).await;
    let baseline = i64::try_from(warm.ok)?;
    let warmed = wait_terminal(&mut sys, Instant::now(), stall, || Some(baseline)).await?;
    if warmed.is_none() {
        bail!("[{name}] the warm-up payments did not finish");
    }
    crate::floor::analyze(&sys.pool).await?;
    // The database's counters bracket the same windows as the CPU's; each
    // reading waits for the backends' flushes first (see `pgstats`).
    let db = DbStats::new(env, sys.database()).await?;
    let db_before = db.settled(sys.own_statements).await?;
    let measured_from: Since = db_before.at;

    let snapshot = |sys: &System| snapshot(sys, Some(sim));
    let before = snapshot(&sys);
    let started = Instant::now();
    let done = Arc::new(OnceLock::new());
    let submit = tokio::spawn({
        let (client, target, done) = (client.clone(), target.clone(), done.clone());
        async move { done.set(load::submit_bounded(client, target, payments, in_flight).await) }
    });
    let expected = || done.get().map(|d: &SubmitOutcome| baseline + d.ok as i64);
    let all_terminal = wait_terminal(&mut sys, started, stall, expected).await?;
    let cpu = before.usage_until(&snapshot(&sys), clk);
    let db_after = db.settled(sys.own_statements).await?;
    let Some(submitted) = done.get().cloned() else {
        submit.abort();
        bail!(
            "[{name}] submission did not finish; see {}",
            env.logs_dir.display()
        );
    };
    let all_terminal_s = all_terminal.map(|d| d.as_secs_f64());
    let payments_per_s = all_terminal_s.map_or(0.0, |s| submitted.ok as f64 / s);
    let database = db.work(&db_before, &db_after);
    let steady_from: Since = db_after.at;
    let accept_to_terminal = latencies_of(&mut sys, measured_from, Some(steady_from)).await?;
    let burst_per_worker = per_worker(&mut sys, measured_from, Some(steady_from)).await?;
    eprintln!(
        "[{name}] {payments_per_s:.0} payments/s (all terminal after {}), accept→terminal {}, \
         per worker {burst_per_worker:?}; {}; database {}",
        all_terminal_s.map_or_else(|| "never".into(), |s| format!("{s:.1} s")),
        tail(accept_to_terminal),
        cpu.cores_line(),
        database.line(submitted.ok)
    );

    // The steady phase: a rate the system just showed it sustains, halved.
    let mut expected = baseline + i64::try_from(submitted.ok)?;
    let steady = if steady_for.is_zero() || all_terminal.is_none() || payments_per_s <= 0.0 {
        None
    } else {
        let rate = (payments_per_s * plan.steady_fraction).max(1.0);
        let before = snapshot(&sys);
        let outcome = load::open_loop(&client, &target, rate, steady_for).await?;
        expected += i64::try_from(outcome.ok)?;
        let waited = wait_terminal(&mut sys, Instant::now(), stall, || Some(expected)).await?;
        let cpu = before.usage_until(&snapshot(&sys), clk);
        let database = db.work(&db_after, &db.settled(sys.own_statements).await?);
        // `open_loop` returns after the last answer; what is left is the
        // tail of processing.
        let drained_after_s =
            waited.map(|w| (outcome.elapsed.saturating_sub(steady_for) + w).as_secs_f64());
        let latency = latencies_of(&mut sys, steady_from, None).await?;
        let result = SteadyResult {
            offered_per_s: rate,
            duration_s: steady_for.as_secs_f64(),
            scheduled: outcome.scheduled,
            accepted: outcome.ok,
            errors: outcome.errors,
            drained_after_s,
            accept_to_terminal: latency,
            per_worker: per_worker(&mut sys, steady_from, None).await?,
            worker_cpu_s_per_1000: per_1000(cpu.part("workers"), outcome.ok),
            cpu,
            database: Some(database),
        };
        eprintln!(
            "[{name}] steady at {rate:.0}/s for {:.0} s: accept→terminal {}, per worker {:?}; \
             {}; database {}",
            steady_for.as_secs_f64(),
            tail(latency),
            result.per_worker,
            result.cpu.cores_line(),
            result
                .database
                .as_ref()
                .map_or_else(String::new, |d| d.line(result.accepted))
        );
        Some(result)
    };

    let statuses: BTreeMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("SELECT status, count(*) FROM payments GROUP BY status")
            .fetch_all(&sys.pool)
            .await?
            .into_iter()
            .collect();
    let sim_stats = sim.stats().await?;
    let api_peak_rss_mib = sys.api_peak_rss_mib();
    let worker_peaks_rss_mib: Vec<f64> = sys.workers.iter().map(|w| w.peak_rss_mib()).collect();
    let worker_peak_rss_mib = worker_peaks_rss_mib.iter().copied().fold(0.0, f64::max);
    sys.stop(env, cleanup).await?;

    let rows: i64 = statuses.values().sum();
    let count = |status: &str| statuses.get(status).copied().unwrap_or(0);
    let (succeeded, terminal) = (count("succeeded"), count("succeeded") + count("failed"));
    let answered = |ok: u64, of: u64, errors: &BTreeMap<String, u64>| {
        format!("{ok} of {of} answered 202; errors: {errors:?}")
    };
    let mut record = |what: &str, passed: bool, detail: String| {
        checks.push(check(&name, what, passed, detail));
    };
    record(
        "every submission was accepted",
        submitted.errors.values().sum::<u64>() == 0,
        answered(submitted.ok, payments, &submitted.errors),
    );
    if let Some(st) = &steady {
        record(
            "every steady-phase submission was accepted",
            st.errors.is_empty() && st.accepted == st.scheduled,
            answered(st.accepted, st.scheduled, &st.errors),
        );
    }
    let steady_ok = steady.as_ref().map_or(0, |st| st.accepted);
    let drained = steady
        .as_ref()
        .is_none_or(|st| st.drained_after_s.is_some());
    record(
        "every accepted payment is terminal",
        all_terminal.is_some() && drained && rows == terminal && terminal >= expected,
        format!(
            "{expected} accepted ({baseline} of them in the warm-up, {steady_ok} in the \
             steady phase), {rows} rows, {terminal} terminal: {statuses:?}"
        ),
    );
    let (duplicates, charges) = (sim_stats.duplicate_charges, sim_stats.charges);
    record(
        "no duplicate charge",
        duplicates == 0,
        format!("processor-sim duplicate_charges = {duplicates}"),
    );
    record(
        "one processor charge per succeeded payment",
        i64::try_from(charges)? == succeeded,
        format!("{charges} charges, {succeeded} succeeded"),
    );

    Ok(E2eResult {
        workers,
        processor_latency_ms: latency_ms,
        worker_concurrency: env.effective_concurrency,
        payments,
        accepted: submitted.ok,
        submit_errors: submitted.errors,
        submit_in_flight: in_flight,
        warmup: baseline.unsigned_abs(),
        submit_s: submitted.elapsed.as_secs_f64(),
        all_terminal_s,
        payments_per_s,
        accept_to_terminal,
        per_worker: burst_per_worker,
        statuses,
        sim: sim_stats,
        api_cpu_s_per_1000: per_1000(cpu.part("api"), submitted.ok),
        worker_cpu_s_per_1000: per_1000(cpu.part("workers"), submitted.ok),
        cpu,
        api_peak_rss_mib,
        worker_peak_rss_mib,
        worker_peaks_rss_mib,
        concurrency_limit_per_s: (latency_ms > 0).then(|| {
            workers as f64 * f64::from(env.effective_concurrency) * 1000.0 / latency_ms as f64
        }),
        steady,
        database: Some(database),
    })
}
