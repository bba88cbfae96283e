//! Retry timing shared by every reconnect loop (built on `backon`).

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

/// Delays for reconnecting to a dependency that went away: 100 ms doubling
/// to 5 s, with jitter so a fleet of processes does not reconnect in step,
/// forever (a payment service waits for its database; it does not give up).
pub fn reconnect_delays() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_and_stay_bounded() {
        let delays: Vec<_> = reconnect_delays().take(20).collect();
        assert_eq!(delays.len(), 20, "never gives up");
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays[10] > delays[0]);
    }
}
