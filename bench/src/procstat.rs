//! CPU time and memory from `/proc` (Linux only).
//!
//! Per process: `utime + stime` from `/proc/<pid>/stat` (fields 14 and 15,
//! in clock ticks) and the peak resident set `VmHWM` from
//! `/proc/<pid>/status`. For the shared services the bench did not start,
//! CPU is summed over every process of that name, including `cutime +
//! cstime` (children already reaped: PostgreSQL backends that disconnected
//! during the window are counted by the postmaster that reaped them). The
//! machine's busy time is the same sum over every process; whatever is busy
//! but belongs to none of the named parts is "other" (kernel threads, and
//! anything else running on the machine at the time). `/proc/stat` adds the
//! shares of time waiting for the disk and stolen by the hypervisor.

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Clock ticks per second of the `/proc` counters, and whether it was
/// assumed (100, the Linux value on every common architecture) because
/// `getconf CLK_TCK` could not be run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ClockTicks {
    pub per_second: u64,
    pub assumed: bool,
}

impl ClockTicks {
    pub fn detect() -> Self {
        let asked = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|ticks: &u64| *ticks > 0);
        Self {
            per_second: asked.unwrap_or(100),
            assumed: asked.is_none(),
        }
    }

    pub fn seconds(self, ticks: u64) -> f64 {
        ticks as f64 / self.per_second as f64
    }
}

/// The command name and the fields after it of `/proc/<pid>/stat`; the name
/// may itself contain spaces and parentheses (hence the last `)`).
fn stat_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    Some((
        stat.get(open + 1..close)?,
        stat.get(close + 1..)?.split_whitespace().collect(),
    ))
}

/// The sum of fields `from..=to` (1-based, as in proc(5)) given the fields
/// from field 3 on.
fn sum(fields: &[&str], from: usize, to: usize) -> u64 {
    (from..=to)
        .map(|n| {
            fields
                .get(n - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// The sum of fields `from..=to` of `/proc/<pid>/stat`.
fn stat_sum(pid: u32, from: usize, to: usize) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let (_, fields) = stat_fields(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))?;
    Ok(sum(&fields, from, to))
}

/// `utime + stime` of one process, in ticks.
pub fn process_ticks(pid: u32) -> anyhow::Result<u64> {
    stat_sum(pid, 14, 15)
}

/// `cutime + cstime` of this process: what its children that exited (and
/// were waited for) used, such as `pgbench`.
pub fn own_children_ticks() -> u64 {
    stat_sum(std::process::id(), 16, 17).unwrap_or(0)
}

/// Peak resident set size (`VmHWM`) of one process, in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// The `cpu` line of `/proc/stat` (all CPUs, in ticks): the total, and the
/// time idle waiting for the disk (PostgreSQL's fsyncs show here) and taken
/// by the hypervisor for other guests (not ours, not idle).
#[derive(Debug, Clone, Copy, Default)]
struct MachineTicks {
    total: u64,
    iowait: u64,
    steal: u64,
}

fn machine_ticks() -> anyhow::Result<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    // user nice system idle iowait irq softirq steal (guest time is already
    // inside user and nice).
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    Ok(MachineTicks {
        total: values.iter().sum(),
        iowait: at(4),
        steal: at(7),
    })
}

/// CPU ticks (own and reaped children's) summed over every process, and
/// over those of the shared services, from one pass over `/proc`. Counting
/// reaped children through their parent's `cutime + cstime` keeps a process
/// that exits inside the window counted exactly once.
#[derive(Debug, Clone, Copy, Default)]
struct ProcessTicks {
    all: u64,
    postgres: u64,
    rabbitmq: u64,
}

fn process_ticks_all() -> ProcessTicks {
    let mut ticks = ProcessTicks::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return ticks;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((comm, fields)) = stat_fields(&stat) {
            let total = sum(&fields, 14, 17);
            ticks.all += total;
            if POSTGRES.contains(&comm) {
                ticks.postgres += total;
            } else if RABBITMQ.contains(&comm) {
                ticks.rabbitmq += total;
            }
        }
    }
    ticks
}

/// Online CPUs (the `cpuN` lines of `/proc/stat`).
pub fn online_cpus() -> usize {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "));
    cpus.count().max(1)
}

/// Process names of the shared services.
const POSTGRES: &[&str] = &["postgres"];
const RABBITMQ: &[&str] = &["beam.smp", "erl_child_setup", "epmd", "inet_gethost"];

/// A reading of every CPU counter the report uses, taken at one moment.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: std::time::Instant,
    /// Ticks per part started by the bench (`api`, `workers`, `processor-sim`).
    parts: BTreeMap<&'static str, u64>,
    processes: ProcessTicks,
    /// The load generator (this process).
    bench: u64,
    machine: MachineTicks,
    cpus: usize,
}

impl CpuSnapshot {
    /// Reads the machine-wide counters; the caller adds its own processes
    /// with [`CpuSnapshot::add`].
    pub fn take() -> Self {
        Self {
            at: std::time::Instant::now(),
            parts: BTreeMap::new(),
            processes: process_ticks_all(),
            bench: process_ticks(std::process::id()).unwrap_or(0),
            machine: machine_ticks().unwrap_or_default(),
            cpus: online_cpus(),
        }
    }

    pub fn add(&mut self, part: &'static str, ticks: u64) {
        *self.parts.entry(part).or_default() += ticks;
    }

    /// CPU used between `self` and `later`.
    pub fn usage_until(&self, later: &Self, clk: ClockTicks) -> CpuUsage {
        let wall_s = later.at.duration_since(self.at).as_secs_f64();
        let secs = |a: u64, b: u64| clk.seconds(b.saturating_sub(a));
        let parts: BTreeMap<String, f64> = later
            .parts
            .iter()
            .map(|(name, after)| {
                let before = self.parts.get(name).copied().unwrap_or(0);
                ((*name).to_owned(), secs(before, *after))
            })
            .collect();
        let postgres_s = secs(self.processes.postgres, later.processes.postgres);
        let rabbitmq_s = secs(self.processes.rabbitmq, later.processes.rabbitmq);
        let bench_s = secs(self.bench, later.bench);
        // Busy time is the sum over processes, not `/proc/stat`'s busy
        // ticks: with a tickless idle kernel those are sampled and, over a
        // few seconds of bursty load, can disagree with the processes' own
        // counters by tens of percent. `/proc/stat` still gives the shares
        // of disk wait and steal.
        let machine_busy_s = secs(self.processes.all, later.processes.all);
        let capacity_s = wall_s * later.cpus as f64;
        let stat_total_s = secs(self.machine.total, later.machine.total);
        let share = |a: u64, b: u64| {
            if stat_total_s > 0.0 {
                100.0 * secs(a, b) / stat_total_s
            } else {
                0.0
            }
        };
        let named: f64 = parts.values().sum::<f64>() + postgres_s + rabbitmq_s + bench_s;
        CpuUsage {
            wall_s,
            parts,
            postgres_s,
            rabbitmq_s,
            bench_s,
            other_s: (machine_busy_s - named).max(0.0),
            machine_busy_s,
            machine_busy_pct: if capacity_s > 0.0 {
                (100.0 * machine_busy_s / capacity_s).min(100.0)
            } else {
                0.0
            },
            iowait_pct: share(self.machine.iowait, later.machine.iowait),
            steal_pct: share(self.machine.steal, later.machine.steal),
        }
    }
}

/// CPU seconds used during one measured window, by part.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuUsage {
    pub wall_s: f64,
    /// `api`, `workers` (all worker processes together), `processor-sim`.
    pub parts: BTreeMap<String, f64>,
    pub postgres_s: f64,
    pub rabbitmq_s: f64,
    /// The load generator (this process).
    pub bench_s: f64,
    /// Busy time of the machine not in any part above.
    pub other_s: f64,
    pub machine_busy_s: f64,
    /// Busy share of all CPUs over the window.
    pub machine_busy_pct: f64,
    /// Share of all CPUs idle waiting for the disk.
    pub iowait_pct: f64,
    /// Share of all CPUs taken by the hypervisor (a noisy neighbour).
    pub steal_pct: f64,
}

impl CpuUsage {
    pub fn part(&self, name: &str) -> f64 {
        self.parts.get(name).copied().unwrap_or(0.0)
    }

    /// A one-line breakdown in cores (CPU seconds per wall second).
    pub fn cores_line(&self) -> String {
        let cores = |s: f64| {
            if self.wall_s > 0.0 {
                s / self.wall_s
            } else {
                0.0
            }
        };
        let mut parts: Vec<String> = self
            .parts
            .iter()
            .map(|(name, s)| format!("{name} {:.2}", cores(*s)))
            .collect();
        parts.push(format!("postgres {:.2}", cores(self.postgres_s)));
        parts.push(format!("rabbitmq {:.2}", cores(self.rabbitmq_s)));
        parts.push(format!("bench {:.2}", cores(self.bench_s)));
        parts.push(format!("other {:.2}", cores(self.other_s)));
        let mut line = format!("machine {:.0}% busy", self.machine_busy_pct);
        if self.iowait_pct >= 1.0 {
            line += &format!(", {:.0}% waiting for disk", self.iowait_pct);
        }
        if self.steal_pct >= 1.0 {
            line += &format!(", {:.0}% stolen by the hypervisor", self.steal_pct);
        }
        format!("{line}; cores used: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 5 1 20 0 1 0";
        let (comm, fields) = stat_fields(stat).expect("parses");
        assert_eq!(comm, "a (b) c");
        assert_eq!([14, 15, 16, 17].map(|n| sum(&fields, n, n)), [7, 3, 5, 1]);
    }

    #[test]
    fn our_own_counters_are_readable() {
        assert!(peak_rss_kib(std::process::id()).expect("VmHWM") > 0);
        let m = machine_ticks().expect("/proc/stat");
        assert!(m.iowait + m.steal <= m.total && m.total > 0);
        assert!(process_ticks_all().all >= process_ticks(std::process::id()).expect("own"));
    }
}
