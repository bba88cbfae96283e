//! The results: one JSON document of measurements, and everything generated
//! from it alone (`--report-from` regenerates them): the targets
//! judged, warnings about a disturbed run, the Markdown page and the chart.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::chart::TARGET_P99_MS;
use crate::floor::{best_rate, FloorPhase, FloorResult};
use crate::machine::Machine;
use crate::pgstats::{DbWork, MIB};
use crate::procstat::CpuUsage;
use crate::scenarios::{AcceptResult, AcceptStep, Check, E2eResult};
use crate::stats::{ms, per_1000, Percentiles};
use crate::template::{fill, row, table};
use crate::Plan;

/// End-to-end throughput as a share of the floor.
const TARGET_FLOOR_SHARE: f64 = 0.60;
/// Offered rate at which accept p99 is judged.
const TARGET_ACCEPT_RATE: f64 = 1000.0;
/// 4 workers over 1 with a 50 ms processor.
const TARGET_SCALING: f64 = 3.5;
const SCALING_LATENCY_MS: u64 = 50;
/// One worker with a slow processor, as a share of its rate with an
/// instant one in the same run: (latency, required share).
const TARGET_SLOW_PROCESSOR: &[(u64, f64)] = &[(300, 0.80), (1000, 0.60)];
/// What we aim for beyond those.
const GOAL_SLOW_PROCESSOR: f64 = 0.90;
/// Runs of one floor phase differing by more than this (relative) mean the
/// machine was not steady; the page says so.
const SPREAD_WARNING: f64 = 0.25;
/// How notes about a disturbed run start (`main` prints them too).
pub const WARNING: &str = "**Warning**";
/// Average cores of "other" load above which a measurement is flagged.
const OTHER_LOAD_WARNING: f64 = 0.25;

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

/// One of the targets, judged.
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

    /// Writes the notes, judges the targets and adds the warnings about the
    /// measurements: all follow from the plan and the numbers alone.
    pub fn judge(&mut self) {
        self.notes = notes(&self.plan, self.mode == "smoke");
        self.targets = self.judge_targets();
        let disturbances = self.disturbances();
        self.notes.extend(disturbances);
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)? + "\n";
        for (file, text) in [
            ("benchmarks.json", json),
            ("benchmarks.md", self.markdown()),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        crate::chart::accept_latency(&dir.join("accept-latency.svg"), &self.accept.steps)
    }

    /// The page: [`TEMPLATE`] filled with this run's values and tables.
    fn markdown(&self) -> String {
        let (m, f, plan, accept) = (&self.machine, &self.floor, &self.plan, &self.accept);
        let notes: Vec<String> = self.notes.iter().map(|n| format!("{n}\n")).collect();
        let details = self
            .targets
            .iter()
            .map(|t| format!("- **{}**: {}", t.target, t.detail));
        let (relation, verb) = if f.lower_of_separate_payments_per_s >= f.floor_payments_per_s {
            ("higher", "is a rate no system on this machine could reach")
        } else {
            (
                "lower",
                "that can only be run-to-run variation (a service does not speed up by sharing \
                 the machine)",
            )
        };
        let (ours, theirs) = (best_rate(&f.postgres_alone), f.pgbench.best_payments_per_s);
        let pgbench_line = match &f.pgbench.not_measured {
            Some(why) => format!("The pgbench line was not measured: {why}.\n"),
            None if theirs > 0.0 => format!(
                "pgbench did the same PostgreSQL work at {theirs:.0} payments/s; our SQL through \
                 `common::db` and sqlx reached {ours:.0}/s alone, {:.0}% of it.\n",
                100.0 * ours / theirs
            ),
            None => String::new(),
        };
        let steady = match self.end_to_end.iter().any(|e| e.steady.is_some()) {
            true => {
                fill!(
                    "steady",
                    steady_pct = format!("{:.0}", plan.steady_fraction * 100.0),
                    steady_secs = format!("{:.0}", plan.steady_secs),
                    steady_table = self.steady_table(),
                ) + "\n"
            }
            false => String::new(),
        };
        let list = self
            .list
            .as_ref()
            .map_or(String::new(), |l| l.markdown() + "\n");
        let pgbench_version = f
            .pgbench
            .version
            .as_ref()
            .or(f.pgbench.not_measured.as_ref());
        let page = fill!(
            "page",
            mode = self.mode,
            generated_at = self.generated_at,
            duration_s = format!("{:.0}", self.duration_s),
            command = self.command,
            notes = notes.join("\n"),
            machine_table = self.machine_table(),
            cpus = m.logical_cpus,
            targets_table = self.targets_table(),
            target_details = details.collect::<Vec<_>>().join("\n"),
            pool_size = f.pool_size,
            consumers = f.consumers,
            prefetch = f.prefetch,
            pgbench_version = pgbench_version.map_or("-", String::as_str),
            probe = f.probe,
            sweep_table = sweep_table(f),
            postgres_in_flight = f.postgres_in_flight,
            rabbitmq_in_flight = f.rabbitmq_in_flight,
            pgbench_in_flight = f.pgbench.in_flight,
            floor_payments = f.payments,
            floor_warmup = f.warmup,
            runs_table = runs_table(f),
            floor_rate = format!("{:.0}", f.floor_payments_per_s),
            separate_rate = format!("{:.0}", f.lower_of_separate_payments_per_s),
            relation = relation,
            verb = verb,
            pgbench_line = pgbench_line,
            step_secs = format!("{:.0}", plan.step_secs),
            accept_warmup = accept.warmup_requests,
            accept_table = self.accept_table(),
            payments = plan.payments,
            submit_in_flight = plan.submit_in_flight,
            worker_concurrency = plan.worker_concurrency,
            worker_db_connections = plan.worker_db_connections,
            api_db_connections = plan.api_db_connections,
            e2e_warmup = self.end_to_end.first().map_or(0, |e| e.warmup),
            e2e_table = self.e2e_table(),
            steady = steady,
            resources_table = self.resources_table(),
            database_numbers = self.database_numbers(),
            database_missing = self.database_missing(),
            database_table = self.database_table(),
            list = list,
            checks_table = self.checks_table(),
        );
        page + "\n"
    }

    fn machine_table(&self) -> String {
        let m = &self.machine;
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
        let (start, end) = (&m.load_average_start, &m.load_average_end);
        let rows = [
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
                format!("{start} at start, {end} at end")
            ],
            row![
                "CPU accounting",
                format!(
                    "{} clock ticks per second ({ticks})",
                    m.clock_ticks.per_second
                )
            ],
        ];
        table(" | ", rows)
    }

    fn targets_table(&self) -> String {
        let verdict = |met| match met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let rows = self
            .targets
            .iter()
            .map(|t| row![t.target, t.measured, verdict(t.met)]);
        table("target | measured | result", rows)
    }

    fn checks_table(&self) -> String {
        let rows = self.checks.iter().map(|c| {
            let result = if c.passed { "passed" } else { "**FAILED**" };
            row![c.scenario, c.what, result, c.detail.replace('|', "\\|")]
        });
        table("scenario | check | result | detail", rows)
    }

    fn accept_table(&self) -> String {
        let head = "offered req/s | achieved req/s | achieved ÷ offered | p50 | p99 | p99.9 | max \
             | errors | api CPU s / 1,000 | generator lag mean / max | where the CPU went \
             (cores)";
        let rows = self.accept.steps.iter().map(|s| {
            let errors = match s.error_count {
                0 => "0".to_owned(),
                n => format!("{n} {:?}", s.errors),
            };
            let (offered, achieved) = (s.offered_per_s, s.achieved_per_s);
            let mut r = row![
                format!("{offered:.0}"),
                format!("{achieved:.0}"),
                format!("{:.2}", achieved / offered)
            ];
            r.extend(latencies(s.latency, true));
            r.extend(row![
                errors,
                format!("{:.3}", s.api_cpu_s_per_1000),
                format!("{:.2} / {:.1} ms", s.spawn_lag_mean_ms, s.spawn_lag_max_ms),
                s.cpu.cores_line()
            ]);
            r
        });
        let mut out = table(head, rows);
        if let Some(line) = self.accept_at_half_capacity() {
            out.push_str("\n\n");
            out.push_str(&line);
        }
        out
    }

    /// The accept path's capacity (the highest rate it answered, every
    /// request with a `202`) and its tail at the step nearest half of it.
    fn accept_at_half_capacity(&self) -> Option<String> {
        let steps = &self.accept.steps;
        // Kept up: every request answered `202`, at (nearly) the offered rate.
        let full = |s: &&AcceptStep| {
            s.error_count == 0
                && s.accepted == s.scheduled
                && s.achieved_per_s >= 0.95 * s.offered_per_s
        };
        let capacity = steps
            .iter()
            .filter(full)
            .map(|s| s.achieved_per_s)
            .fold(None, |best: Option<f64>, r| {
                Some(best.map_or(r, |b| b.max(r)))
            })?;
        let half = steps.iter().filter(full).min_by(|a, b| {
            let off = |s: &AcceptStep| (s.offered_per_s - capacity / 2.0).abs();
            off(a).total_cmp(&off(b))
        })?;
        let p99 = half
            .latency
            .as_ref()
            .map_or("-".to_owned(), |l| format!("{:.1} ms", l.p99_ms));
        let top = steps.iter().map(|s| s.offered_per_s).fold(0.0, f64::max);
        let bound = if capacity >= 0.95 * top {
            " (it kept up with every step of this run: the capacity is at least this)"
        } else {
            ""
        };
        Some(format!(
            "Capacity of one API process here: {capacity:.0} req/s, the highest rate it kept up \
             with, every request answered{bound}. At {:.0} req/s offered, the step nearest half of it ({:.0} % of \
             capacity), p99 {p99}.",
            half.offered_per_s,
            100.0 * half.offered_per_s / capacity
        ))
    }

    fn e2e_table(&self) -> String {
        let runs = &self.end_to_end;
        let head = "workers | processor latency | all terminal after | payments/s | ÷ instant | ÷ \
             floor | ÷ lower separate floor | ÷ concurrency limit | burst accept→terminal \
             p50 | p99 | p99.9 | per worker | submit phase";
        let rows = runs.iter().map(|e| {
            let ratio = |of: Option<f64>| {
                of.map_or("-".into(), |of| format!("{:.2}", e.payments_per_s / of))
            };
            let zero = e.processor_latency_ms == 0;
            let instant = find(runs, e.workers, 0)
                .map(|i| i.payments_per_s)
                .filter(|r| *r > 0.0);
            let mut r = row![
                e.workers,
                format!("{} ms", e.processor_latency_ms),
                secs(e.all_terminal_s),
                format!("{:.0}", e.payments_per_s),
                ratio(instant.filter(|_| !zero)),
                ratio(zero.then_some(self.floor.floor_payments_per_s)),
                ratio(zero.then_some(self.floor.lower_of_separate_payments_per_s)),
                e.concurrency_limit_per_s.map_or("-".into(), |c| {
                    format!("{:.2} (of {c:.0}/s)", e.payments_per_s / c)
                })
            ];
            r.extend(latencies(e.accept_to_terminal, false));
            let submit_rate = e.accepted as f64 / e.submit_s.max(1e-9);
            r.extend(row![
                shares(&e.per_worker),
                format!("{:.1} s ({submit_rate:.0}/s)", e.submit_s)
            ]);
            r
        });
        table(head, rows)
    }

    fn steady_table(&self) -> String {
        let head = "workers | processor latency | offered payments/s | accepted | accept→terminal \
             p50 | p99 | p99.9 | max | last terminal after the last request | workers CPU s \
             / 1,000 | per worker | where the CPU went (cores)";
        let rows = self.end_to_end.iter().filter_map(|e| {
            let st = e.steady.as_ref()?;
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
            Some(r)
        });
        table(head, rows)
    }

    /// Every database reading of the run, burst and steady, with the
    /// payments it is divided by.
    fn database_work(&self) -> impl Iterator<Item = (&DbWork, u64)> {
        self.end_to_end.iter().flat_map(|e| {
            let steady = e.steady.as_ref();
            let steady = steady.and_then(|st| st.database.as_ref().map(|d| (d, st.accepted)));
            e.database
                .as_ref()
                .map(|d| (d, e.accepted))
                .into_iter()
                .chain(steady)
        })
    }

    /// How long the readings waited for the flushes and how many of the
    /// bench's own statements were taken out, shortest to longest; it
    /// follows a sentence, so it starts with a space (or is empty).
    fn database_numbers(&self) -> String {
        let work: Vec<&DbWork> = self.database_work().map(|(d, _)| d).collect();
        if work.is_empty() {
            return String::new();
        }
        let range = |values: Vec<f64>, unit: &str, digits: usize| {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(0.0, f64::max);
            if format!("{min:.digits$}") == format!("{max:.digits$}") {
                format!("{max:.digits$}{unit}")
            } else {
                format!("{min:.digits$} to {max:.digits$}{unit}")
            }
        };
        format!(
            " In this run a reading waited {} for the flushes, and {} of the bench's own \
             statements were taken out of a window.",
            range(work.iter().map(|d| d.settle_s).collect(), " s", 1),
            range(
                work.iter().map(|d| d.own_statements as f64).collect(),
                "",
                0
            )
        )
    }

    fn database_missing(&self) -> String {
        if self.database_work().next().is_none() && !self.end_to_end.is_empty() {
            "This run's results were written before the bench read these counters: only \
             PostgreSQL CPU was measured."
                .into()
        } else {
            String::new()
        }
    }

    fn database_table(&self) -> String {
        let head = "scenario | phase | payments/s | ÷ floor | postgres CPU s / 1,000 | commits / \
             1,000 | rollbacks / 1,000 | statements / 1,000 | WAL MiB / 1,000 | WAL records / \
             1,000 | full-page images / 1,000";
        let cells = |d: Option<&DbWork>, payments: u64| {
            let per = |n: u64| per_1000(n as f64, payments);
            let Some(d) = d else {
                return row!["-", "-", "-", "-", "-", "-"];
            };
            let statements = match (d.statements, &d.statements_missing) {
                (Some(n), _) => format!("{:.0}", per(n)),
                (None, Some(why)) => format!("n/a ({why})"),
                (None, None) => "n/a".into(),
            };
            row![
                format!("{:.0}", per(d.commits)),
                format!("{:.1}", per(d.rollbacks)),
                statements,
                format!("{:.2}", per(d.wal_bytes) / MIB),
                format!("{:.0}", per(d.wal_records)),
                format!("{:.0}", per(d.wal_fpi))
            ]
        };
        let rows = self.end_to_end.iter().flat_map(|e| {
            let scenario = format!("{} worker(s), {} ms", e.workers, e.processor_latency_ms);
            let floor = (e.processor_latency_ms == 0 && self.floor.floor_payments_per_s > 0.0)
                .then(|| format!("{:.2}", e.payments_per_s / self.floor.floor_payments_per_s));
            let mut burst = row![
                scenario,
                "burst",
                format!("{:.0}", e.payments_per_s),
                floor.unwrap_or_else(|| "-".into()),
                format!("{:.3}", per_1000(e.cpu.postgres_s, e.accepted))
            ];
            burst.extend(cells(e.database.as_ref(), e.accepted));
            let steady = e.steady.as_ref().map(|st| {
                let mut r = row![
                    scenario,
                    "steady",
                    format!("{:.0}", st.offered_per_s),
                    "-",
                    format!("{:.3}", per_1000(st.cpu.postgres_s, st.accepted))
                ];
                r.extend(cells(st.database.as_ref(), st.accepted));
                r
            });
            std::iter::once(burst).chain(steady)
        });
        table(head, rows)
    }

    fn resources_table(&self) -> String {
        let head = "scenario | api CPU s / 1,000 | workers CPU s / 1,000 | postgres CPU s / 1,000 \
             | rabbitmq CPU s / 1,000 | processor-sim CPU s / 1,000 | api peak RSS | worker \
             peak RSS (each) | where the CPU went (cores)";
        let rows = self.end_to_end.iter().map(|e| {
            let per_1000 = |s: f64| format!("{:.3}", per_1000(s, e.accepted));
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
        let accept_rss = format!("{:.1} MiB", self.accept.api_peak_rss_mib);
        let accept = row![
            "accept path (no workers)",
            "see above",
            "-",
            "-",
            "-",
            "-",
            accept_rss,
            "-",
            "see above"
        ];
        table(head, rows.chain([accept]))
    }

    /// Warnings about measurements something else on the machine disturbed:
    /// floor runs that disagree, and windows with much CPU outside the parts.
    fn disturbances(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let spread = spread(&self.floor);
        if spread > SPREAD_WARNING {
            notes.push(format!(
                "{WARNING}: two runs of the same floor phase differ by {:.0}%: the machine was not \
                 steady. Treat the numbers with that much doubt, or rerun on a quieter machine.",
                spread * 100.0
            ));
        }
        let mut windows: Vec<(String, &CpuUsage)> = Vec::new();
        for (_, name, runs) in phases(&self.floor) {
            for (i, run) in runs.iter().enumerate() {
                windows.push((format!("floor, {name}, round {}", i + 1), &run.cpu));
            }
        }
        for s in &self.accept.steps {
            windows.push((
                format!("accept path at {:.0} req/s", s.offered_per_s),
                &s.cpu,
            ));
        }
        for e in &self.end_to_end {
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
        let unsettled: Vec<String> = self
            .end_to_end
            .iter()
            .flat_map(|e| {
                let what = format!("{} worker(s), {} ms", e.workers, e.processor_latency_ms);
                let burst = e.database.as_ref().map(|d| (format!("{what}, burst"), d));
                let steady = e.steady.as_ref().and_then(|st| st.database.as_ref());
                burst
                    .into_iter()
                    .chain(steady.map(|d| (format!("{what}, steady"), d)))
            })
            .filter(|(_, d)| !d.settled)
            .map(|(name, _)| name)
            .collect();
        if !unsettled.is_empty() {
            notes.push(format!(
                "{WARNING}: the database counters of {} were read before every backend had \
                 flushed its statistics (the wait reached its limit): their commits and WAL may \
                 be short.",
                unsettled.join("; ")
            ));
        }
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

    /// Judges the targets against this run's numbers.
    fn judge_targets(&self) -> Vec<TargetResult> {
        let (floor, e2e) = (&self.floor, &self.end_to_end[..]);
        let during = |cpu: &CpuUsage| format!(" During it: {}.", cpu.cores_line());
        let mut targets = Vec::new();

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
            None => not_measured(
                goal,
                "no end-to-end scenario with processor latency 0 was run",
            ),
            Some(e) => {
                let (f, rate) = (floor.floor_payments_per_s, e.payments_per_s);
                let (share, separate) = (rate / f, floor.lower_of_separate_payments_per_s);
                let met = share >= TARGET_FLOOR_SHARE;
                let mut detail = format!(
                    "best at processor latency 0: {} worker(s), {rate:.0} payments/s against a \
                     floor of {f:.0}/s ({:.0}%; {:.0}% of the lower separate floor, \
                     {separate:.0}/s).",
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
                target(goal, format!("{:.0}%", share * 100.0), met, detail)
            }
        });

        // 2. Accept p99 at most 20 ms at 1,000 req/s offered.
        let goal =
            format!("accept p99 ≤ {TARGET_P99_MS:.0} ms at {TARGET_ACCEPT_RATE:.0} req/s offered");
        let step = self
            .accept
            .steps
            .iter()
            .find(|s| (s.offered_per_s - TARGET_ACCEPT_RATE).abs() < 0.5);
        targets.push(match step.and_then(|s| s.latency.map(|l| (s, l))) {
            None => not_measured(goal, "no step at 1,000 req/s in this run (see --rates)"),
            Some((s, l)) => {
                let (p99, p999) = (ms(Some(l.p99_ms)), ms(Some(l.p999_ms)));
                let mut detail = format!(
                    "p99 {p99}, p99.9 {p999}, {:.0} req/s achieved, {} errors.",
                    s.achieved_per_s, s.error_count
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
                        " The accept path alone kept the machine {:.0}% busy at this rate: it is \
                         the knee of the curve, where the tail swings widely from run to run.",
                        s.cpu.machine_busy_pct
                    );
                }
                let met = l.p99_ms <= TARGET_P99_MS && s.error_count == 0;
                target(goal, p99, met, detail)
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
            let pair = instant.zip(find(e2e, 1, latency_ms));
            let Some((i, e)) = pair.filter(|(i, _)| i.payments_per_s > 0.0) else {
                let why = format!(
                    "needs runs with 1 worker at 0 and {latency_ms} ms (see --workers, \
                     --latencies-ms)"
                );
                targets.push(not_measured(goal, &why));
                continue;
            };
            let ratio = e.payments_per_s / i.payments_per_s;
            let mut detail = format!(
                "1 worker: {:.0} payments/s with a {latency_ms} ms processor, {:.0}/s with an \
                 instant one in the same run: {:.0}% ({:.0}% of its concurrency limit {:.0}/s, \
                 `WORKER_CONCURRENCY={}`).",
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
            targets.push(target(
                goal,
                format!("{:.0}%", ratio * 100.0),
                ratio >= share,
                detail,
            ));
        }

        // 3. With a 50 ms processor, 4 workers at least 3.5× one.
        let goal =
            format!("{SCALING_LATENCY_MS} ms processor: 4 workers ≥ {TARGET_SCALING}× 1 worker");
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
                    "1 worker {:.0} payments/s ({one_pct:.0}% of its concurrency limit \
                     {one_of:.0}/s), 4 workers {:.0} payments/s ({four_pct:.0}% of \
                     {four_of:.0}/s): {ratio:.2}×.",
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
                target(goal, format!("{ratio:.2}×"), met, detail)
            }
            _ => not_measured(
                goal,
                &format!(
                    "needs runs with 1 and 4 workers at {SCALING_LATENCY_MS} ms (see --workers, \
                     --latencies-ms)"
                ),
            ),
        });
        targets
    }
}

/// What a reader must know about the run's size.
fn notes(plan: &Plan, smoke: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if smoke {
        notes.push(
            "**Smoke run**: sized for CI, to prove the bench and the system still work; its \
             numbers are not benchmarks."
                .to_owned(),
        );
    }
    let rates: Vec<String> = plan.rates.iter().map(|r| format!("{r:.0}")).collect();
    let concurrency = if plan.worker_concurrency_is_default {
        " (the worker's default)"
    } else {
        ""
    };
    let connections = if plan.db_connections_are_defaults {
        " (the defaults)"
    } else {
        ""
    };
    notes.push(format!(
        "Run size: accept path at {} req/s for {} s each; {} payments per end-to-end scenario \
         and per floor run, then {} s at half the scenario's rate; {}workers {:?}; processor \
         latency {:?} ms. Settings: `WORKER_CONCURRENCY={}`{concurrency}, \
         `DATABASE_MAX_CONNECTIONS` {} for the API and {} per worker{connections}; \
         `RATE_LIMIT_PER_SECOND` and `RATE_LIMIT_BURST` {} (the bench's one key offers \
         thousands of requests per second, far above the per-key default of 100/s, burst 200; \
         it measures the service, not the limiter).",
        rates.join(", "),
        plan.step_secs,
        plan.payments,
        plan.steady_secs,
        if plan.apis > 1 {
            format!(
                "{} API processes (submissions spread over them in turn); ",
                plan.apis
            )
        } else {
            String::new()
        },
        plan.workers,
        plan.latencies_ms,
        plan.worker_concurrency,
        plan.api_db_connections,
        plan.worker_db_connections,
        crate::system::RATE_LIMIT,
    ));
    notes
}

fn target(target: String, measured: String, met: bool, detail: String) -> TargetResult {
    TargetResult {
        target,
        measured,
        met: Some(met),
        detail,
    }
}

/// A target this run's scenarios cannot judge, and why.
fn not_measured(target: String, why: &str) -> TargetResult {
    TargetResult {
        target,
        measured: "-".into(),
        met: None,
        detail: why.into(),
    }
}

fn bold(best: bool, v: f64) -> String {
    if best {
        format!("**{v:.0}**")
    } else {
        format!("{v:.0}")
    }
}

/// Every timed floor phase: its name in the report's table, in its
/// warnings, and its runs.
fn phases(f: &FloorResult) -> [(&'static str, &'static str, &[FloorPhase]); 4] {
    [
        ("PostgreSQL alone", "PostgreSQL alone", &f.postgres_alone),
        (
            "PostgreSQL alone, pgbench",
            "pgbench alone",
            &f.pgbench.runs,
        ),
        ("RabbitMQ alone", "RabbitMQ alone", &f.rabbitmq_alone),
        ("both at once (the floor)", "both at once", &f.together),
    ]
}

/// Largest relative difference between runs of the same floor phase: a
/// measure of how steady the machine was.
fn spread(f: &FloorResult) -> f64 {
    let spread = |runs: &[FloorPhase]| {
        let max = best_rate(runs);
        let min = runs
            .iter()
            .map(|r| r.payments_per_s)
            .fold(f64::INFINITY, f64::min);
        if max > 0.0 {
            1.0 - min / max
        } else {
            0.0
        }
    };
    phases(f)
        .iter()
        .map(|(_, _, runs)| spread(runs))
        .fold(0.0, f64::max)
}

fn sweep_table(f: &FloorResult) -> String {
    let head = "in flight | PostgreSQL payments/s (common::db) | PostgreSQL payments/s \
         (pgbench) | RabbitMQ messages/s";
    let rows = f.sweep.iter().map(|p| {
        row![
            p.in_flight,
            bold(p.in_flight == f.postgres_in_flight, p.postgres_per_s),
            p.pgbench_per_s
                .map_or("-".into(), |r| bold(p.in_flight == f.pgbench.in_flight, r)),
            bold(p.in_flight == f.rabbitmq_in_flight, p.rabbitmq_per_s)
        ]
    });
    table(head, rows)
}

fn runs_table(f: &FloorResult) -> String {
    let rows = phases(f).into_iter().flat_map(|(name, _, runs)| {
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
        "run | seconds | payments/s | where the CPU went (cores)",
        rows,
    )
}

/// p50, p99, p99.9 and, if asked, max.
fn latencies(l: Option<Percentiles>, max: bool) -> Vec<String> {
    let mut cells: Vec<fn(&Percentiles) -> f64> = vec![|l| l.p50_ms, |l| l.p99_ms, |l| l.p999_ms];
    if max {
        cells.push(|l| l.max_ms);
    }
    cells.into_iter().map(|f| ms(l.as_ref().map(f))).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_run_renders_to_the_stored_page() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        let read = |file| std::fs::read_to_string(docs.join(file)).expect("docs/ is readable");
        let mut report: Report = serde_json::from_str(&read("benchmarks.json")).expect("decodes");
        report.judge();
        assert_eq!(report.markdown(), read("benchmarks.md"));
    }
}
