//! The simulator's shared state: fault settings, counters and the idempotency
//! store.
//!
//! Plain `std::sync::Mutex`es guard short, synchronous updates and are never
//! held across an `.await`; the only lock held while waiting is the per-key
//! `tokio::sync::Mutex` that serialises requests sharing an idempotency key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use common::processor::{Faults, SimStats};
use tokio_util::sync::CancellationToken;

/// A charge's answer exactly as first sent, so a replay is byte-for-byte the
/// same (status and body).
#[derive(Debug, Clone)]
pub(crate) struct StoredAnswer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl IntoResponse for StoredAnswer {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body,
        )
            .into_response()
    }
}

/// One idempotency key's slot. Holding its lock is what makes a key's first
/// request the only one that can charge: concurrent requests wait, then find
/// the stored answer. `None` until a charge has been answered (faults store
/// nothing, so a retry can still succeed).
pub(crate) type Slot = Arc<tokio::sync::Mutex<Option<StoredAnswer>>>;

/// The counters behind `GET /_sim/stats`, plus what `duplicate_charges` is
/// computed from.
#[derive(Debug, Default)]
struct Ledger {
    stats: SimStats,
    /// Approved charges per `reference`: a count above one is a payment
    /// charged twice.
    approved_by_reference: HashMap<String, u64>,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Sim {
    faults: Mutex<Faults>,
    ledger: Mutex<Ledger>,
    slots: Mutex<HashMap<String, Slot>>,
    shutdown: CancellationToken,
}

/// Locks a std mutex, recovering from poisoning: every critical section here
/// leaves the data consistent, so a panic elsewhere must not take the
/// simulator down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sim {
    pub(crate) fn new(shutdown: CancellationToken) -> Self {
        Self {
            faults: Mutex::new(Faults::default()),
            ledger: Mutex::new(Ledger::default()),
            slots: Mutex::new(HashMap::new()),
            shutdown,
        }
    }

    pub(crate) fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    /// Replaces the fault settings; the caller has validated them.
    pub(crate) fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = faults;
    }

    pub(crate) fn stats(&self) -> SimStats {
        lock(&self.ledger).stats.clone()
    }

    /// The slot of `key`, created empty on first use.
    pub(crate) fn slot(&self, key: &str) -> Slot {
        Arc::clone(lock(&self.slots).entry(key.to_owned()).or_default())
    }

    /// The slot of `key` if an operation ever took it; never creates one.
    pub(crate) fn find_slot(&self, key: &str) -> Option<Slot> {
        lock(&self.slots).get(key).map(Arc::clone)
    }

    pub(crate) fn count_lookup(&self) {
        lock(&self.ledger).stats.lookups += 1;
    }

    pub(crate) fn count_request(&self) {
        lock(&self.ledger).stats.requests += 1;
    }

    pub(crate) fn count_replay(&self) {
        lock(&self.ledger).stats.replays += 1;
    }

    pub(crate) fn count_decline(&self) {
        lock(&self.ledger).stats.declines += 1;
    }

    /// Records an approved charge for `reference`, counting the payment as
    /// duplicated the moment it gets its second approval.
    pub(crate) fn count_approval(&self, reference: &str) {
        let mut ledger = lock(&self.ledger);
        ledger.stats.charges += 1;
        let approvals = ledger
            .approved_by_reference
            .entry(reference.to_owned())
            .or_insert(0);
        *approvals += 1;
        if *approvals == 2 {
            ledger.stats.duplicate_charges += 1;
        }
    }

    /// Forgets stats, stored answers and faults, for a fresh run. Requests in
    /// flight keep the slot they hold; their answer is then stored nowhere.
    pub(crate) fn reset(&self) {
        *lock(&self.ledger) = Ledger::default();
        lock(&self.slots).clear();
        *lock(&self.faults) = Faults::default();
    }

    /// Waits `duration`, or less if the service is shutting down. Returns
    /// whether the full duration passed.
    pub(crate) async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}
