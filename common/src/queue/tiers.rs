//! Retry tiers: the delays a job waits before each retry, their jitter, and
//! the delay queue each one is (DESIGN.md §4). One type for the setting, the
//! topology that declares a queue per tier, and the worker that picks one.

use std::time::Duration;

use rand::Rng as _;

use super::Topology;

/// Non-empty list of delays: after the n-th failed attempt a job waits the
/// n-th, the last one repeating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTiers(Vec<Duration>);

impl RetryTiers {
    pub fn new(delays: Vec<Duration>) -> Result<Self, String> {
        if delays.is_empty() {
            return Err("at least one delay is needed".into());
        }
        Ok(Self(delays))
    }

    /// A comma-separated list of seconds, each 0.001 to 86400.
    pub fn parse(value: &str) -> Result<Self, String> {
        crate::config::parse_delays(value).and_then(Self::new)
    }

    /// The tier after the `attempts`-th attempt: the n-th delay, the last
    /// one repeating.
    pub fn tier(&self, attempts: i32) -> Duration {
        let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(0);
        self.0[index.min(self.0.len() - 1)]
    }

    /// The tier after the `attempts`-th attempt and the delay to wait in
    /// it: the tier less up to 20 %, so retries of many jobs that failed
    /// together spread out instead of returning at once. The delay never
    /// exceeds the tier, the queue's own TTL.
    pub fn jittered(&self, attempts: i32) -> (Duration, Duration) {
        let tier = self.tier(attempts);
        (tier, tier.mul_f64(rand::thread_rng().gen_range(0.8..=1.0)))
    }

    /// The routing key of a tier's delay queue.
    pub fn routing_key(tier: Duration) -> String {
        Topology::retry_key(tier)
    }
}

impl std::ops::Deref for RetryTiers {
    type Target = [Duration];
    fn deref(&self) -> &[Duration] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_tier_repeats_and_jitter_stays_within_the_tier() {
        let tiers = RetryTiers::parse("1,5").expect("valid");
        assert_eq!(tiers.tier(0), Duration::from_secs(1));
        assert_eq!(tiers.tier(1), Duration::from_secs(1));
        assert_eq!(tiers.tier(2), Duration::from_secs(5));
        assert_eq!(tiers.tier(9), Duration::from_secs(5));
        for attempts in 1..50 {
            let (tier, delay) = tiers.jittered(attempts);
            assert!(
                delay <= tier && delay >= tier.mul_f64(0.8),
                "{delay:?} in {tier:?}"
            );
        }
        assert!(RetryTiers::new(Vec::new()).is_err());
        assert_eq!(
            RetryTiers::routing_key(Duration::from_secs(5)),
            "retry.5000ms"
        );
    }
}
