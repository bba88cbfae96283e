//! Percentiles by exact sorting.
//!
//! Why sorting and not `hdrhistogram`: one scenario keeps at most a few
//! hundred thousand samples (20,000 payments, or 4,000 req/s × a few
//! seconds), so holding them all and sorting costs a few milliseconds and a
//! few megabytes, and gives the exact order statistic with no precision or
//! range to choose. A histogram pays off for millions of samples or for
//! merging streams, neither of which happens here, and the current
//! `hdrhistogram` release needs a newer Rust than the workspace declares.
//!
//! The percentile is the nearest-rank one: the smallest sample with at least
//! `q × n` samples at or below it, so p99.9 of 1,000 samples is the slowest.

use serde::{Deserialize, Serialize};

/// Order statistics of one set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Sorts `samples_ms` in place; `None` when there are none.
    pub fn of(samples_ms: &mut [f64]) -> Option<Self> {
        if samples_ms.is_empty() {
            return None;
        }
        samples_ms.sort_by(f64::total_cmp);
        Some(Self {
            count: samples_ms.len(),
            p50_ms: nearest_rank(samples_ms, 0.50),
            p99_ms: nearest_rank(samples_ms, 0.99),
            p999_ms: nearest_rank(samples_ms, 0.999),
            max_ms: samples_ms[samples_ms.len() - 1],
        })
    }
}

/// A latency for humans: `3.21 ms`, or `-` when there is none.
pub fn ms(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if v >= 10.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.2} ms"),
    }
}

/// CPU seconds per 1,000 of `n` (0 when there are none).
pub fn per_1000(cpu_s: f64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        cpu_s * 1000.0 / n as f64
    }
}

/// `sorted` must be sorted and not empty.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    // Ranks are small positive integers: the cast cannot truncate.
    let rank = (q * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_thousand() {
        let mut samples: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut samples).expect("samples");
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.p999_ms, 999.0);
        assert_eq!(p.max_ms, 1000.0);
    }

    #[test]
    fn a_single_sample_is_every_percentile_and_none_is_none() {
        let p = Percentiles::of(&mut [7.0]).expect("one sample");
        assert_eq!((p.p50_ms, p.p99_ms, p.p999_ms), (7.0, 7.0, 7.0));
        assert_eq!(Percentiles::of(&mut []), None);
    }
}
