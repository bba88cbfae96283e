//! The per-key token buckets behind the rate limit (`http::rate_limit`
//! applies them to requests): `governor`'s keyed GCRA limiter, in this
//! process's memory, and the sweeper that forgets keys whose bucket is full
//! again.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often keys with a full bucket are forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

type KeyedLimiter =
    RateLimiter<Uuid, DefaultKeyedStateStore<Uuid>, DefaultClock, StateInformationMiddleware>;

/// One bucket per API key id.
pub struct Limiter {
    limiter: KeyedLimiter,
    burst: u32,
    /// Time to refill one request.
    interval: Duration,
}

/// The outcome of one check, with what the headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Whole seconds until a request is allowed again (refused ones only).
    pub retry_after_secs: u64,
}

impl Limiter {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            burst: burst.get(),
            interval: quota.replenish_interval(),
        }
    }

    /// Takes one request from `key`'s bucket, if there is one to take.
    pub fn check(&self, key: Uuid) -> Decision {
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: self.burst,
                    remaining,
                    reset_secs: ceil_secs(self.interval * (self.burst - remaining)),
                    retry_after_secs: 0,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                // One request's worth comes back after `wait`; the rest of
                // the bucket one interval each after that.
                let full = wait + self.interval * self.burst.saturating_sub(1);
                Decision {
                    allowed: false,
                    limit: self.burst,
                    remaining: 0,
                    reset_secs: ceil_secs(full),
                    retry_after_secs: ceil_secs(wait).max(1),
                }
            }
        }
    }

    /// Keys whose bucket is full again are indistinguishable from new ones:
    /// forget them.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// Console sign-in attempts this process takes at once, of every client
/// together; after them, one a second.
pub const SIGN_IN_BURST: u32 = 10;

/// The console's sign-in attempts, counted for every client together (the
/// API sees no client address it could trust behind a proxy). Each attempt
/// hashes a key, looks it up, and when refused writes an audit row: without
/// a bound, anyone who can reach the page could make the database write
/// without end. An operator locked out by a flood still has the operator
/// API, with the same key.
pub struct SignIns(governor::DefaultDirectRateLimiter);

impl Default for SignIns {
    fn default() -> Self {
        let quota = Quota::per_second(NonZeroU32::MIN)
            .allow_burst(NonZeroU32::new(SIGN_IN_BURST).unwrap_or(NonZeroU32::MIN));
        Self(RateLimiter::direct(quota))
    }
}

impl SignIns {
    /// Takes one attempt; refused, the whole seconds until one is taken.
    pub fn check(&self) -> Result<(), u64> {
        self.0
            .check()
            .map_err(|not_until| ceil_secs(not_until.wait_time_from(self.0.clock().now())).max(1))
    }
}

/// Sweeps the limiter every [`SWEEP_INTERVAL`] until `stop`.
pub async fn sweeper(limiter: Arc<Limiter>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => limiter.sweep(),
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32) -> Limiter {
        Limiter::new(
            NonZeroU32::new(per_second).expect("non-zero"),
            NonZeroU32::new(burst).expect("non-zero"),
        )
    }

    #[test]
    fn sign_ins_get_their_burst_then_wait() {
        let sign_ins = SignIns::default();
        for _ in 0..SIGN_IN_BURST {
            assert_eq!(sign_ins.check(), Ok(()));
        }
        assert_eq!(sign_ins.check(), Err(1), "one more a second");
    }

    #[test]
    fn a_key_gets_its_burst_then_is_refused_with_a_retry_after() {
        let limiter = limiter(5, 5);
        let key = Uuid::new_v4();
        let remaining: Vec<u32> = (0..5).map(|_| limiter.check(key).remaining).collect();
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        let refused = limiter.check(key);
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 5);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_secs, 1);
        assert!(refused.reset_secs >= 1);
    }

    #[test]
    fn keys_have_buckets_of_their_own() {
        let limiter = limiter(1, 2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(limiter.check(a).allowed);
        assert!(limiter.check(a).allowed);
        assert!(!limiter.check(a).allowed);
        assert!(limiter.check(b).allowed);
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn the_reset_counts_the_seconds_until_the_bucket_is_full() {
        let limiter = limiter(1, 10);
        let key = Uuid::new_v4();
        let first = limiter.check(key);
        assert_eq!((first.remaining, first.reset_secs), (9, 1));
        for _ in 0..4 {
            limiter.check(key);
        }
        let sixth = limiter.check(key);
        assert_eq!(sixth.remaining, 4);
        assert!((5..=6).contains(&sixth.reset_secs), "{sixth:?}");
    }

    #[test]
    fn the_sweep_keeps_keys_that_are_still_limited() {
        let limiter = limiter(1, 1);
        let key = Uuid::new_v4();
        assert!(limiter.check(key).allowed);
        limiter.sweep();
        assert_eq!(limiter.len(), 1, "an empty bucket is remembered");
    }

    #[test]
    fn keys_whose_bucket_is_full_again_are_forgotten() {
        let limiter = limiter(1000, 1);
        assert!(limiter.check(Uuid::new_v4()).allowed);
        // One request refills in a millisecond.
        std::thread::sleep(Duration::from_millis(20));
        limiter.sweep();
        assert!(limiter.is_empty());
    }
}
