//! The results: one JSON document of measurements, and everything generated
//! from it alone (`--report-from` regenerates them): the issue's targets
//! judged, warnings about a disturbed run, the Markdown page and the chart.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::chart::TARGET_P99_MS;
use crate::floor::{best_rate, FloorResult};
use crate::machine::Machine;
use crate::procstat::CpuUsage;
use crate::scenarios::{AcceptResult, Check, E2eResult};
use crate::stats::{ms, Percentiles};
use crate::Plan;

/// End-to-end throughput as a share of the floor.
pub const TARGET_FLOOR_SHARE: f64 = 0.60;
/// Offered rate at which accept p99 is judged.
pub const TARGET_ACCEPT_RATE: f64 = 1000.0;
/// 4 workers over 1 with a 50 ms processor.
pub const TARGET_SCALING: f64 = 3.5;
pub const SCALING_LATENCY_MS: u64 = 50;
/// One worker with a slow processor, as a share of its rate with an
/// instant one in the same run: (latency, required share).
pub const TARGET_SLOW_PROCESSOR: &[(u64, f64)] = &[(300, 0.80), (1000, 0.60)];
/// What we aim for beyond those.
pub const GOAL_SLOW_PROCESSOR: f64 = 0.90;
/// Runs of one floor phase differing by more than this (relative) mean the
/// machine was not steady; the page says so.
pub const SPREAD_WARNING: f64 = 0.25;
/// How notes about a disturbed run start (`main` prints them too).
pub const WARNING: &str = "**Warning**";
/// Average cores of "other" load above which a measurement is flagged.
const OTHER_LOAD_WARNING: f64 = 0.25;

/// `writeln!` to a `String`, which cannot fail.
macro_rules! w {
    ($out:expr) => { $out.push('\n') };
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}
pub(crate) use w;

/// `format!` of each value into a table row.
macro_rules! row {
    ($($cell:expr),* $(,)?) => { vec![$($cell.to_string()),*] };
}
pub(crate) use row;

/// A Markdown table and the blank line after it.
pub fn table(out: &mut String, head: &str, rows: impl IntoIterator<Item = Vec<String>>) {
    let head: Vec<&str> = head.split(" | ").collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        cells.fold("|".to_owned(), |l, c| match c {
            "" => l + " |",
            c => l + " " + c + " |",
        })
    };
    w!(out, "{}", line(&mut head.iter().copied()));
    w!(out, "|{}", "---|".repeat(head.len()));
    for r in rows {
        w!(out, "{}", line(&mut r.iter().map(String::as_str)));
    }
    w!(out);
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub generated_at: String,
    pub mode: String,
    /// The command that reproduces this run.
    pub command: String,
    pub duration_s: f64,
    pub plan: Plan,
    pub notes: Vec<String>,
    pub machine: Machine,
    pub floor: FloorResult,
    pub accept: AcceptResult,
    pub end_to_end: Vec<E2eResult>,
    pub targets: Vec<TargetResult>,
    pub checks: Vec<Check>,
    pub list: Option<crate::list::ListResult>,
    pub logs_dir: String,
}

/// One of the issue's targets, judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetResult {
    pub target: String,
    pub measured: String,
    /// `None`: not measured in this run (say, `--rates` left 1,000 out).
    pub met: Option<bool>,
    pub detail: String,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// Judges the targets and adds the warnings about the measurements to
    /// `notes`: both follow from the numbers alone.
    pub fn judge(&mut self) {
        self.targets = judge_targets(&self.floor, &self.accept, &self.end_to_end);
        self.notes
            .extend(disturbances(&self.floor, &self.accept, &self.end_to_end));
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (file, text) in [
            (
                "benchmarks.json",
                serde_json::to_string_pretty(self)? + "\n",
            ),
            ("benchmarks.md", self.markdown()),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        crate::chart::accept_latency(&dir.join("accept-latency.svg"), &self.accept.steps)
    }

    fn markdown(&self) -> String {
        let (mut out, m) = (String::new(), &self.machine);
        let out = &mut out;
        w!(out, "# Benchmarks\n");
        w!(
            out,
            "Measured by the `bench` crate ({} run) on {}, in {:.0} s of wall time. Every number \
             on this page comes from that one run on one machine, the floor included, so each \
             result can be read as a ratio to what this machine can do. The page, \
             `benchmarks.json` and `accept-latency.svg` are written by the bench itself; rerun \
             it to replace them:\n",
            self.mode,
            self.generated_at,
            self.duration_s
        );
        w!(
            out,
            "```sh\ncargo build --release --bins\n{}\n```\n",
            self.command
        );
        w!(
            out,
            "What was changed on the hot path, with before/after numbers measured the same \
             way: [optimizations.md](optimizations.md).\n"
        );
        for note in &self.notes {
            w!(out, "{note}\n");
        }

        w!(out, "## Machine\n");
        let settings: Vec<String> = m
            .postgres_settings
            .iter()
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect();
        let ticks = if m.clock_ticks.assumed {
            "assumed: `getconf CLK_TCK` could not be run"
        } else {
            "from `getconf CLK_TCK`"
        };
        table(
            out,
            " | ",
            [
                row!["CPU", format!("{} × {}", m.logical_cpus, m.cpu_model)],
                row!["Memory", format!("{:.1} GiB", m.memory_gib)],
                row!["Kernel", format!("Linux {}", m.kernel)],
                row![
                    "PostgreSQL",
                    format!("{} ({})", m.postgres_version, settings.join(", "))
                ],
                row!["RabbitMQ", m.rabbitmq_version],
                row![
                    "Load average (1/5/15 min)",
                    format!(
                        "{} at start, {} at end",
                        m.load_average_start, m.load_average_end
                    )
                ],
                row![
                    "CPU accounting",
                    format!(
                        "{} clock ticks per second ({ticks})",
                        m.clock_ticks.per_second
                    )
                ],
            ],
        );
        w!(
            out,
            "Everything runs on these {} CPUs at once: PostgreSQL, RabbitMQ, the API, the \
             workers, processor-sim and the load generator. The \"where the CPU went\" columns \
             below show how they shared it, in cores (CPU seconds per second of wall time, \
             summed over every process); \"other\" is busy time outside all of them (kernel \
             threads such as disk flushes, and anything else running on the machine). On a \
             shared virtual machine the same work can cost visibly more CPU in one run than in \
             another, so compare numbers within a run rather than across runs.\n",
            m.logical_cpus
        );

        w!(out, "## Targets\n");
        let verdict = |met| match met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let targets = self.targets.iter();
        table(
            out,
            "target | measured | result",
            targets.map(|t| row![t.target, t.measured, verdict(t.met)]),
        );
        for t in &self.targets {
            w!(out, "- **{}**: {}", t.target, t.detail);
        }
        w!(out);

        floor_section(out, &self.floor);
        self.accept_section(out);
        self.e2e_section(out);
        self.resources_section(out);
        if let Some(list) = &self.list {
            list.write_markdown(out);
        }

        w!(out, "## Correctness checks\n");
        w!(
            out,
            "Checked on every run, smoke or full; any failure makes the bench exit non-zero. \
             None of them is about time.\n"
        );
        table(
            out,
            "scenario | check | result | detail",
            self.checks.iter().map(|c| {
                let result = if c.passed { "passed" } else { "**FAILED**" };
                row![c.scenario, c.what, result, c.detail.replace('|', "\\|")]
            }),
        );
        w!(out, "{METHOD}");
        std::mem::take(out)
    }

    fn accept_section(&self, out: &mut String) {
        let a = &self.accept;
        w!(out, "## Accept path\n");
        w!(
            out,
            "Open-loop `POST /v1/payments` (the seed request) at each offered rate for {:.0} s, \
             after {} warm-up requests and a `VACUUM ANALYZE`, against one API process with no worker running (so the \
             accept path has the machine to itself; the queue just grows). Latency is measured \
             from each request's intended send time. Percentiles are of the `202` answers; \
             errors are counted apart.\n",
            self.plan.step_secs,
            a.warmup_requests
        );
        let head = "offered req/s | achieved req/s | achieved ÷ offered | p50 | p99 | p99.9 | max \
             | errors | api CPU s / 1,000 | generator lag mean / max | where the CPU went \
             (cores)";
        table(
            out,
            head,
            a.steps.iter().map(|s| {
                let errors = match s.error_count {
                    0 => "0".to_owned(),
                    n => format!("{n} {:?}", s.errors),
                };
                let mut r = row![
                    format!("{:.0}", s.offered_per_s),
                    format!("{:.0}", s.achieved_per_s),
                    format!("{:.2}", s.achieved_per_s / s.offered_per_s)
                ];
                r.extend(latencies(s.latency, true));
                r.extend(row![
                    errors,
                    format!("{:.3}", s.api_cpu_s_per_1000),
                    format!("{:.2} / {:.1} ms", s.spawn_lag_mean_ms, s.spawn_lag_max_ms),
                    s.cpu.cores_line()
                ]);
                r
            }),
        );
        w!(
            out,
            "![accept latency vs offered load](accept-latency.svg)\n"
        );
    }

    fn e2e_section(&self, out: &mut String) {
        let (plan, runs) = (&self.plan, &self.end_to_end);
        w!(out, "## End to end\n");
        w!(
            out,
            "{} payments per scenario submitted as fast as the API takes them ({} in flight), \
             each worker with `WORKER_CONCURRENCY={}` and `DATABASE_MAX_CONNECTIONS={}` (the API \
             {}), after {} payments run end to end and a `VACUUM ANALYZE` that are not counted. \
             \"All terminal\" is from the first request until a poll (every 100 ms) counts every \
             accepted payment `succeeded` or `failed`; payments/s is accepted payments over that \
             time. \"÷ instant\" is that rate over the rate of the same number of workers with \
             processor latency 0 in this run. The concurrency limit is Little's law with a slow \
             processor: workers × concurrency ÷ processor latency. \"Per worker\" is the share \
             of the payments each worker finished (from `claimed_by`), in start order.\n",
            plan.payments,
            plan.submit_in_flight,
            plan.worker_concurrency,
            plan.worker_db_connections,
            plan.api_db_connections,
            runs.first().map_or(0, |e| e.warmup)
        );
        let head = "workers | processor latency | all terminal after | payments/s | ÷ instant | ÷ \
             floor | ÷ lower separate floor | ÷ concurrency limit | burst accept→terminal \
             p50 | p99 | p99.9 | per worker | submit phase";
        let instant = |w: usize| {
            find(runs, w, 0)
                .map(|i| i.payments_per_s)
                .filter(|r| *r > 0.0)
        };
        let ratio = |e: &E2eResult, of: Option<f64>| {
            of.map_or("-".into(), |of| format!("{:.2}", e.payments_per_s / of))
        };
        table(
            out,
            head,
            runs.iter().map(|e| {
                let zero = e.processor_latency_ms == 0;
                let floor = |f: f64| ratio(e, zero.then_some(f));
                let mut r = row![
                    e.workers,
                    format!("{} ms", e.processor_latency_ms),
                    secs(e.all_terminal_s),
                    format!("{:.0}", e.payments_per_s),
                    ratio(e, instant(e.workers).filter(|_| !zero)),
                    floor(self.floor.floor_payments_per_s),
                    floor(self.floor.lower_of_separate_payments_per_s),
                    e.concurrency_limit_per_s.map_or("-".into(), |c| {
                        format!("{:.2} (of {c:.0}/s)", e.payments_per_s / c)
                    })
                ];
                r.extend(latencies(e.accept_to_terminal, false));
                r.extend(row![
                    shares(&e.per_worker),
                    format!(
                        "{:.1} s ({:.0}/s)",
                        e.submit_s,
                        e.accepted as f64 / e.submit_s.max(1e-9)
                    )
                ]);
                r
            }),
        );
        w!(
            out,
            "The floor ratios are given for processor latency 0 only: the floor has no \
             processor in it. The burst's accept→terminal includes the time a payment waited \
             behind the backlog: the submitter accepts payments faster than they are processed, \
             so these percentiles grow with the number of payments and describe a burst being \
             worked off. The steady phase below gives the latency at a sustainable rate.\n"
        );
        if runs.iter().all(|e| e.steady.is_none()) {
            return;
        }
        w!(out, "### At a sustainable rate\n");
        w!(
            out,
            "After each burst, with the same processes: open-loop `POST /v1/payments` at \
             {:.0}% of the rate the burst was worked off at, for {:.0} s (request *i* due at \
             *start + i / rate*, whatever happened to earlier ones), then until every payment \
             is terminal. Accept→terminal is `finished_at - created_at` of those payments: \
             queueing, the processor's latency, and our own work.\n",
            plan.steady_fraction * 100.0,
            plan.steady_secs
        );
        let head = "workers | processor latency | offered payments/s | accepted | accept→terminal \
             p50 | p99 | p99.9 | max | last terminal after the last request | workers CPU s \
             / 1,000 | per worker | where the CPU went (cores)";
        let steady = runs
            .iter()
            .filter_map(|e| e.steady.as_ref().map(|st| (e, st)));
        table(
            out,
            head,
            steady.map(|(e, st)| {
                let mut r = row![
                    e.workers,
                    format!("{} ms", e.processor_latency_ms),
                    format!("{:.0}", st.offered_per_s),
                    format!("{} of {}", st.accepted, st.scheduled)
                ];
                r.extend(latencies(st.accept_to_terminal, true));
                r.extend(row![
                    secs(st.drained_after_s),
                    format!("{:.3}", st.worker_cpu_s_per_1000),
                    shares(&st.per_worker),
                    st.cpu.cores_line()
                ]);
                r
            }),
        );
    }

    fn resources_section(&self, out: &mut String) {
        w!(out, "## CPU and memory\n");
        w!(
            out,
            "CPU seconds (user + system, from `/proc/<pid>/stat`) per 1,000 accepted payments, \
             over the burst; peak RSS is `VmHWM` from `/proc/<pid>/status`, over the whole \
             scenario (burst and steady phase), for the API and each worker. A worker's peak with \
             a slow processor is what `WORKER_CONCURRENCY` payments in flight cost it.\n"
        );
        let head = "scenario | api CPU s / 1,000 | workers CPU s / 1,000 | postgres CPU s / 1,000 \
             | rabbitmq CPU s / 1,000 | processor-sim CPU s / 1,000 | api peak RSS | worker \
             peak RSS (each) | where the CPU went (cores)";
        let rows = self.end_to_end.iter().map(|e| {
            let per_1000 = |s: f64| format!("{:.3}", crate::stats::per_1000(s, e.accepted));
            let peaks: Vec<String> = e
                .worker_peaks_rss_mib
                .iter()
                .map(|m| format!("{m:.1}"))
                .collect();
            row![
                format!("{} worker(s), {} ms", e.workers, e.processor_latency_ms),
                format!("{:.3}", e.api_cpu_s_per_1000),
                format!("{:.3}", e.worker_cpu_s_per_1000),
                per_1000(e.cpu.postgres_s),
                per_1000(e.cpu.rabbitmq_s),
                per_1000(e.cpu.part("processor-sim")),
                format!("{:.1} MiB", e.api_peak_rss_mib),
                format!("{} MiB", peaks.join(" / ")),
                e.cpu.cores_line()
            ]
        });
        let accept = row![
            "accept path (no workers)",
            "see above",
            "-",
            "-",
            "-",
            "-",
            format!("{:.1} MiB", self.accept.api_peak_rss_mib),
            "-",
            "see above"
        ];
        table(out, head, rows.chain([accept]));
    }
}

fn floor_section(out: &mut String, f: &FloorResult) {
    w!(out, "## Floor\n");
    w!(
        out,
        "What PostgreSQL and RabbitMQ on this machine can do for the work of one payment, \
         with none of our services in between, measured in the same run. PostgreSQL: the \
         writes of one payment through `common::db` itself (`payments::insert`, \
         `payments::claim`, `payments::succeed`, and `outbox::delete` batched by 500 as the \
         API does), over a pool of {} connections. RabbitMQ: one persistent `Job` per \
         payment published with a confirm through `common::queue::Broker::publish`, \
         consumed by {} lapin consumer(s) (one per worker of the largest scenario) with \
         manual acks and prefetch {}. pgbench: the same PostgreSQL writes sent by \
         PostgreSQL's own client (`pgbench --protocol=prepared`, {}), one pgbench \
         transaction per payment made of its three write transactions (`insert`, `claim`, \
         `succeed`, each its own commit, in the SQL text of `common::db::payments` with the \
         same parameters), the outbox rows deleted in one timed statement at the end; a \
         payment written by the script is checked to equal one written through `common::db` \
         in every column but id, receipt number and timestamps. It shows how far our SQL \
         through sqlx is from what the database does for the same work.\n",
        f.pool_size,
        f.consumers,
        f.prefetch,
        f.pgbench
            .version
            .as_deref()
            .or(f.pgbench.not_measured.as_deref())
            .unwrap_or("-")
    );
    w!(
        out,
        "First a sweep over payments in flight, {} payments per level, each service \
         alone:\n",
        f.probe
    );
    let bold = |best: bool, v: f64| {
        if best {
            format!("**{v:.0}**")
        } else {
            format!("{v:.0}")
        }
    };
    let head = "in flight | PostgreSQL payments/s (common::db) | PostgreSQL payments/s \
         (pgbench) | RabbitMQ messages/s";
    table(
        out,
        head,
        f.sweep.iter().map(|p| {
            row![
                p.in_flight,
                bold(p.in_flight == f.postgres_in_flight, p.postgres_per_s),
                p.pgbench_per_s
                    .map_or("-".into(), |r| bold(p.in_flight == f.pgbench.in_flight, r)),
                bold(p.in_flight == f.rabbitmq_in_flight, p.rabbitmq_per_s)
            ]
        }),
    );
    w!(
        out,
        "The timed runs use each service's best level (in bold: {} for PostgreSQL, {} for \
         RabbitMQ, {} for pgbench), {} payments each, after {} untimed ones and a \
         `VACUUM ANALYZE` on each fresh database (see \"Method\"). The three phases of our \
         own code run in rounds, twice; the best run of each phase (in bold) counts, so a \
         slow spell of a shared machine cannot pass for the floor. pgbench runs twice \
         before them, alone (its clients are connections of their own, and PostgreSQL's \
         `max_connections` does not hold them beside every warm pool of the other phases); \
         its sweep gives each client at least 100 payments, so that new backends preparing \
         their statements do not weigh on it:\n",
        f.postgres_in_flight,
        f.rabbitmq_in_flight,
        f.pgbench.in_flight,
        f.payments,
        f.warmup
    );
    let rows = f.phases().into_iter().flat_map(|(name, _, runs)| {
        let best = best_rate(runs);
        runs.iter().enumerate().map(move |(i, p)| {
            row![
                format!("{name}, round {}", i + 1),
                format!("{:.2}", p.seconds),
                bold(p.payments_per_s >= best, p.payments_per_s),
                p.cpu.cores_line()
            ]
        })
    });
    table(
        out,
        "run | seconds | payments/s | where the CPU went (cores)",
        rows,
    );
    let (relation, verb) = if f.lower_of_separate_payments_per_s >= f.floor_payments_per_s {
        ("higher", "is a rate no system on this machine could reach")
    } else {
        (
            "lower",
            "that can only be run-to-run variation (a service does not speed up by sharing \
             the machine)",
        )
    };
    w!(
        out,
        "The floor is the best run of both at once, {:.0} payments/s: in the system, \
         PostgreSQL and RabbitMQ work at the same time on the same CPUs, while each separate \
         run had the whole machine to itself. The lower of the two services' best separate \
         runs, {:.0} payments/s, is {relation}, and {verb}; ratios to both are given \
         below.\n",
        f.floor_payments_per_s,
        f.lower_of_separate_payments_per_s
    );
    let ours = best_rate(&f.postgres_alone);
    match &f.pgbench.not_measured {
        Some(why) => w!(out, "The pgbench line was not measured: {why}.\n"),
        None if f.pgbench.best_payments_per_s > 0.0 => w!(
            out,
            "pgbench did the same PostgreSQL work at {:.0} payments/s; our SQL through \
             `common::db` and sqlx reached {:.0}/s alone, {:.0}% of it.\n",
            f.pgbench.best_payments_per_s,
            ours,
            100.0 * ours / f.pgbench.best_payments_per_s
        ),
        None => {}
    }
}

/// p50, p99, p99.9 and, if asked, max.
fn latencies(l: Option<Percentiles>, max: bool) -> Vec<String> {
    let mut cells = vec![
        ms(l.map(|l| l.p50_ms)),
        ms(l.map(|l| l.p99_ms)),
        ms(l.map(|l| l.p999_ms)),
    ];
    if max {
        cells.push(ms(l.map(|l| l.max_ms)));
    }
    cells
}

fn secs(s: Option<f64>) -> String {
    s.map_or("never".into(), |s| format!("{s:.1} s"))
}

/// Each worker's share of `counts`, e.g. `25% / 26% / 24% / 25%`.
fn shares(counts: &[u64]) -> String {
    let total: u64 = counts.iter().sum();
    if counts.len() < 2 || total == 0 {
        return "-".into();
    }
    let pcts: Vec<String> = counts
        .iter()
        .map(|c| format!("{:.0}%", 100.0 * *c as f64 / total as f64))
        .collect();
    pcts.join(" / ")
}

fn pct(value: f64, of: Option<f64>) -> f64 {
    of.filter(|o| *o > 0.0).map_or(0.0, |o| 100.0 * value / o)
}

/// The run with `workers` workers and a processor answering in
/// `latency_ms`.
fn find(e2e: &[E2eResult], workers: usize, latency_ms: u64) -> Option<&E2eResult> {
    e2e.iter()
        .find(|e| e.workers == workers && e.processor_latency_ms == latency_ms)
}

const METHOD: &str = "## Method and caveats

- The bench starts the release binaries `api`, `worker` and `processor-sim` as child processes \
  with `RUST_LOG=warn` and nothing else from the caller's environment. Each scenario gets a fresh \
  database `bench_<run>_<scenario>` and queue prefix of the same name, and fresh API and worker \
  processes (so CPU and peak memory belong to that scenario); all are removed at the end, also \
  after a failure. processor-sim runs for the whole run and is reset (`POST /_sim/reset`) before \
  each scenario, then given its latency (`PUT /_sim/faults`).
- Open loop: request *i* of a step is due at *start + i / rate*; it is spawned at that slot \
  whatever happened to earlier requests and timed from the slot, so a stalled server cannot \
  slow the generator and hide its own stall (no coordinated omission). The timeline is kept by \
  a dedicated thread (`std::thread::sleep`, tens of microseconds of slack, not tokio's 1 ms \
  timer); any lateness in sending is counted against the server, and the generator-lag column \
  shows how much there was. The client speaks HTTP/1.1 and opens \
  as many connections as there are requests in flight.
- Warm-ups: every timed part starts on a database that already holds rows and has just had \
  `VACUUM ANALYZE`, with warm connections. A database created seconds earlier otherwise keeps \
  the planner statistics of near-empty tables until autovacuum happens by; in runs without \
  this, a timed part now and then ran several times slower, PostgreSQL burning five to eight \
  times the CPU per payment. A production database is not seconds old, so the warmed state is \
  the one worth measuring.
- Percentiles are exact (all samples sorted, nearest rank), not histogram estimates.
- pgbench runs as a child of the bench; its CPU is the bench's reaped children's time while it \
  ran. Its rate is its own \"without initial connection time\" (our pool is connected before \
  timing too) plus the final outbox delete.
- Each worker's share comes from `payments.claimed_by` (the worker id carries the process id), \
  counting the payments it finished; shares near 1/N with N workers mean none of them hoarded \
  messages the others could have taken.
- The load generator, the databases and the services share the same CPUs, so every number \
  includes their competition for them. The CPU breakdowns say how much each took.
- CPU time of PostgreSQL and RabbitMQ is summed over every process of that name on the machine \
  (including reaped children), so other databases' activity at the same time would be counted \
  too. Whether anything else was running shows in the \"other\" share of each breakdown (the \
  load average at the end includes the run itself).";

/// Warnings about measurements something else on the machine disturbed:
/// floor runs that disagree, and windows with much CPU outside the parts.
pub fn disturbances(floor: &FloorResult, accept: &AcceptResult, e2e: &[E2eResult]) -> Vec<String> {
    let mut notes = Vec::new();
    let spread = floor.spread();
    if spread > SPREAD_WARNING {
        notes.push(format!(
            "{WARNING}: two runs of the same floor phase differ by {:.0}%: the machine was not \
             steady. Treat the numbers with that much doubt, or rerun on a quieter machine.",
            spread * 100.0
        ));
    }
    let mut windows: Vec<(String, &CpuUsage)> = Vec::new();
    for (_, name, runs) in floor.phases() {
        for (i, run) in runs.iter().enumerate() {
            windows.push((format!("floor, {name}, round {}", i + 1), &run.cpu));
        }
    }
    for s in &accept.steps {
        windows.push((
            format!("accept path at {:.0} req/s", s.offered_per_s),
            &s.cpu,
        ));
    }
    for e in e2e {
        let what = format!("{} worker(s), {} ms", e.workers, e.processor_latency_ms);
        windows.push((format!("end to end, {what}"), &e.cpu));
        if let Some(st) = &e.steady {
            windows.push((format!("steady phase, {what}"), &st.cpu));
        }
    }
    let disturbed: Vec<String> = windows
        .iter()
        .filter(|(_, cpu)| cpu.wall_s > 0.0 && cpu.other_s / cpu.wall_s > OTHER_LOAD_WARNING)
        .map(|(name, cpu)| format!("{name} ({:.2} cores)", cpu.other_s / cpu.wall_s))
        .collect();
    if !disturbed.is_empty() {
        notes.push(format!(
            "{WARNING}: something outside the system under test used the CPU during: {}. Those \
             numbers are lower than this machine would give undisturbed; rerun on a quiet \
             machine to replace them.",
            disturbed.join("; ")
        ));
    }
    notes
}

fn target(target: String, measured: String, met: Option<bool>, detail: String) -> TargetResult {
    TargetResult {
        target,
        measured,
        met,
        detail,
    }
}

/// A target this run's scenarios cannot judge, and why.
fn not_measured(goal: String, why: String) -> TargetResult {
    target(goal, "-".into(), None, why)
}

/// Judges the issue's targets against this run's numbers.
pub fn judge_targets(
    floor: &FloorResult,
    accept: &AcceptResult,
    e2e: &[E2eResult],
) -> Vec<TargetResult> {
    let mut targets = Vec::new();
    let during = |cpu: &CpuUsage| format!(" During it: {}.", cpu.cores_line());

    // 1. End to end at least 60 % of the floor (processor latency 0).
    let best = e2e
        .iter()
        .filter(|e| e.processor_latency_ms == 0)
        .max_by(|a, b| a.payments_per_s.total_cmp(&b.payments_per_s));
    let goal = format!(
        "end to end ≥ {:.0}% of the floor (processor latency 0)",
        TARGET_FLOOR_SHARE * 100.0
    );
    targets.push(match best {
        None => not_measured(goal, "no end-to-end scenario with processor latency 0 was run".into()),
        Some(e) => {
            let (f, rate) = (floor.floor_payments_per_s, e.payments_per_s);
            let (share, separate) = (rate / f, floor.lower_of_separate_payments_per_s);
            let met = share >= TARGET_FLOOR_SHARE;
            let mut detail = format!(
                "best at processor latency 0: {} worker(s), {rate:.0} payments/s against a floor of \
                 {f:.0}/s ({:.0}%; {:.0}% of the lower separate floor, {separate:.0}/s).",
                e.workers,
                share * 100.0,
                rate / separate * 100.0,
            );
            if !met {
                detail += &format!(
                    " Short by {:.0} percentage points ({:.0} payments/s).",
                    (TARGET_FLOOR_SHARE - share) * 100.0,
                    TARGET_FLOOR_SHARE * f - rate
                );
            }
            detail += &during(&e.cpu);
            target(goal, format!("{:.0}%", share * 100.0), Some(met), detail)
        }
    });

    // 2. Accept p99 at most 20 ms at 1,000 req/s offered.
    let goal =
        format!("accept p99 ≤ {TARGET_P99_MS:.0} ms at {TARGET_ACCEPT_RATE:.0} req/s offered");
    let step = accept
        .steps
        .iter()
        .find(|s| (s.offered_per_s - TARGET_ACCEPT_RATE).abs() < 0.5);
    targets.push(match step.and_then(|s| s.latency.map(|l| (s, l))) {
        None => not_measured(
            goal,
            "no step at 1,000 req/s in this run (see --rates)".into(),
        ),
        Some((s, l)) => {
            let mut detail = format!(
                "p99 {}, p99.9 {}, {:.0} req/s achieved, {} errors.",
                ms(Some(l.p99_ms)),
                ms(Some(l.p999_ms)),
                s.achieved_per_s,
                s.error_count
            );
            if l.p99_ms > TARGET_P99_MS {
                detail += &format!(
                    " Over by {} ({:.1}×).",
                    ms(Some(l.p99_ms - TARGET_P99_MS)),
                    l.p99_ms / TARGET_P99_MS
                );
            }
            detail += &during(&s.cpu);
            if s.cpu.machine_busy_pct >= 85.0 {
                detail += &format!(
                    " The accept path alone kept the machine {:.0}% busy at this rate: it is the \
                     knee of the curve, where the tail swings widely from run to run.",
                    s.cpu.machine_busy_pct
                );
            }
            let met = l.p99_ms <= TARGET_P99_MS && s.error_count == 0;
            target(goal, ms(Some(l.p99_ms)), Some(met), detail)
        }
    });

    // 2b. One worker with a slow processor keeps most of its instant rate.
    let instant = find(e2e, 1, 0);
    for &(latency_ms, share) in TARGET_SLOW_PROCESSOR {
        let goal = format!(
            "{latency_ms} ms processor: 1 worker ≥ {:.0}% of its instant rate (goal {:.0}%)",
            share * 100.0,
            GOAL_SLOW_PROCESSOR * 100.0
        );
        targets.push(match (instant, find(e2e, 1, latency_ms)) {
            (Some(i), Some(e)) if i.payments_per_s > 0.0 => {
                let ratio = e.payments_per_s / i.payments_per_s;
                let mut detail = format!(
                    "1 worker: {:.0} payments/s with a {latency_ms} ms processor, {:.0}/s with an \
                     instant one in the same run: {:.0}% ({:.0}% of its concurrency limit \
                     {:.0}/s, `WORKER_CONCURRENCY={}`).",
                    e.payments_per_s,
                    i.payments_per_s,
                    ratio * 100.0,
                    pct(e.payments_per_s, e.concurrency_limit_per_s),
                    e.concurrency_limit_per_s.unwrap_or(0.0),
                    e.worker_concurrency
                );
                if ratio < share {
                    detail += &format!(
                        " Short by {:.0} percentage points.",
                        (share - ratio) * 100.0
                    );
                } else if ratio < GOAL_SLOW_PROCESSOR {
                    detail += &format!(
                        " The {:.0}% goal is {:.0} points further.",
                        GOAL_SLOW_PROCESSOR * 100.0,
                        (GOAL_SLOW_PROCESSOR - ratio) * 100.0
                    );
                }
                if let Some(l) = e.steady.as_ref().and_then(|st| st.accept_to_terminal) {
                    detail += &format!(
                        " At half that rate, accept→terminal p50 {}, p99 {}.",
                        ms(Some(l.p50_ms)),
                        ms(Some(l.p99_ms))
                    );
                }
                detail += &during(&e.cpu);
                let measured = format!("{:.0}%", ratio * 100.0);
                target(goal, measured, Some(ratio >= share), detail)
            }
            _ => not_measured(
                goal,
                format!(
                    "needs runs with 1 worker at 0 and {latency_ms} ms (see --workers, \
                     --latencies-ms)"
                ),
            ),
        });
    }

    // 3. With a 50 ms processor, 4 workers at least 3.5× one.
    let goal = format!("{SCALING_LATENCY_MS} ms processor: 4 workers ≥ {TARGET_SCALING}× 1 worker");
    let pair = (
        find(e2e, 1, SCALING_LATENCY_MS),
        find(e2e, 4, SCALING_LATENCY_MS),
    );
    targets.push(match pair {
        (Some(one), Some(four)) if one.payments_per_s > 0.0 => {
            let ratio = four.payments_per_s / one.payments_per_s;
            let met = ratio >= TARGET_SCALING;
            let limit = |e: &E2eResult| {
                let of = e.concurrency_limit_per_s;
                (pct(e.payments_per_s, of), of.unwrap_or(0.0))
            };
            let ((one_pct, one_of), (four_pct, four_of)) = (limit(one), limit(four));
            let mut detail = format!(
                "1 worker {:.0} payments/s ({one_pct:.0}% of its concurrency limit {one_of:.0}/s), \
                 4 workers {:.0} payments/s ({four_pct:.0}% of {four_of:.0}/s): {ratio:.2}×.",
                one.payments_per_s, four.payments_per_s,
            );
            if !met {
                detail += &format!(
                    " Short by {:.2}× ({:.0} payments/s).",
                    TARGET_SCALING - ratio,
                    TARGET_SCALING * one.payments_per_s - four.payments_per_s
                );
            }
            let needed = TARGET_SCALING * one.payments_per_s;
            detail += &format!(
                " During the 4-worker run: {}. {TARGET_SCALING}× one worker is {needed:.0} \
                 payments/s: {:.0}% of the floor",
                four.cpu.cores_line(),
                100.0 * needed / floor.floor_payments_per_s
            );
            detail += &best.map_or(".".into(), |b| {
                format!(
                    ", and {:.0}% of the best end-to-end rate this machine reached with no \
                     processor latency at all ({:.0}/s).",
                    100.0 * needed / b.payments_per_s,
                    b.payments_per_s
                )
            });
            target(goal, format!("{ratio:.2}×"), Some(met), detail)
        }
        _ => not_measured(
            goal,
            format!(
                "needs runs with 1 and 4 workers at {SCALING_LATENCY_MS} ms (see --workers, \
                 --latencies-ms)"
            ),
        ),
    });
    targets
}
