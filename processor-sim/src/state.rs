//! The simulator's shared state: fault settings, counters, the charge book
//! and the idempotency store.
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
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::book::{Captured, ChargeBook, ChargeRecord, Refunded, Refusal, Voided};
use crate::error::SimError;

/// An operation's answer exactly as first sent, so a replay or a lookup is
/// byte-for-byte the same (status and body).
#[derive(Debug, Clone)]
pub(crate) struct StoredAnswer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl StoredAnswer {
    /// The answer to store under the idempotency key for a refusal by the
    /// charge book. A refusal about an existing charge is the processor's
    /// decision on the operation, so a replay or lookup returns it; an
    /// unknown charge is `Err`, not stored, like a malformed request.
    pub(crate) fn refusal(refusal: &Refusal) -> Result<Self, SimError> {
        let error = SimError::refused(refusal);
        if *refusal == Refusal::NoSuchCharge {
            return Err(error);
        }
        Self::json(error.status, &error.body())
    }

    /// Serialises once, so every replay sends the very same bytes.
    pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Result<Self, SimError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            tracing::error!(error = %e, "serialising an answer to store");
            SimError::internal()
        })?;
        Ok(Self {
            status,
            body: Bytes::from(body),
        })
    }
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

/// What an idempotency key is scoped to. Each kind of operation has its own
/// keys, so one reused across kinds never replays another kind's answer;
/// capture and void keys are also scoped to their charge, whose id is in the
/// path, so a lookup at one charge's path never finds another charge's
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Operation {
    Charge,
    Capture { charge: String },
    Void { charge: String },
    Refund,
}

impl Operation {
    /// For log lines.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Capture { .. } => "capture",
            Self::Void { .. } => "void",
            Self::Refund => "refund",
        }
    }
}

/// One idempotency key's slot. Holding its lock is what makes a key's first
/// request the only one that can act: concurrent requests wait, then find
/// the stored answer. `None` until an operation has been answered (faults
/// store nothing, so a retry can still succeed).
pub(crate) type Slot = Arc<tokio::sync::Mutex<Option<StoredAnswer>>>;

/// The counters behind `GET /_sim/stats`, what `duplicate_charges` and
/// `duplicate_refunds` are computed from, and the charge book. One lock for
/// all, so a counter never disagrees with the book.
#[derive(Debug, Default)]
struct Ledger {
    stats: SimStats,
    /// Approved charges per `reference`: a count above one is a payment
    /// charged twice.
    approved_by_reference: HashMap<String, u64>,
    /// Paid refunds per `reference`: a count above one is a refund paid
    /// twice.
    refunded_by_reference: HashMap<String, u64>,
    book: ChargeBook,
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Sim {
    faults: Mutex<Faults>,
    ledger: Mutex<Ledger>,
    slots: Mutex<HashMap<(Operation, String), Slot>>,
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

    /// The slot of `key` for `operation`, created empty on first use.
    pub(crate) fn slot(&self, operation: &Operation, key: &str) -> Slot {
        Arc::clone(
            lock(&self.slots)
                .entry((operation.clone(), key.to_owned()))
                .or_default(),
        )
    }

    /// The slot of `key` for `operation` if one was ever taken; never creates
    /// one.
    pub(crate) fn find_slot(&self, operation: &Operation, key: &str) -> Option<Slot> {
        lock(&self.slots)
            .get(&(operation.clone(), key.to_owned()))
            .map(Arc::clone)
    }

    pub(crate) fn count_lookup(&self) {
        lock(&self.ledger).stats.lookups += 1;
    }

    pub(crate) fn count_request(&self) {
        lock(&self.ledger).stats.requests += 1;
    }

    pub(crate) fn count_capture_request(&self) {
        lock(&self.ledger).stats.capture_requests += 1;
    }

    pub(crate) fn count_void_request(&self) {
        lock(&self.ledger).stats.void_requests += 1;
    }

    pub(crate) fn count_replay(&self) {
        lock(&self.ledger).stats.replays += 1;
    }

    /// Records a declined charge, so later operations on it are refused as
    /// such rather than as unknown.
    pub(crate) fn record_decline(&self, id: &str, record: ChargeRecord) {
        let mut ledger = lock(&self.ledger);
        ledger.stats.declines += 1;
        ledger.book.insert(id.to_owned(), record);
    }

    /// Records an approved charge for `reference`, counting the payment as
    /// duplicated the moment it gets its second approval.
    pub(crate) fn record_approval(&self, id: &str, reference: &str, record: ChargeRecord) {
        let mut ledger = lock(&self.ledger);
        ledger.stats.charges += 1;
        ledger.book.insert(id.to_owned(), record);
        let approvals = ledger
            .approved_by_reference
            .entry(reference.to_owned())
            .or_insert(0);
        *approvals += 1;
        if *approvals == 2 {
            ledger.stats.duplicate_charges += 1;
        }
    }

    /// Captures charge `id` in the book and counts it.
    pub(crate) fn capture(&self, id: &str, amount: Option<i64>) -> Result<Captured, Refusal> {
        let mut ledger = lock(&self.ledger);
        let captured = ledger.book.capture(id, amount)?;
        ledger.stats.captures += 1;
        Ok(captured)
    }

    /// Voids charge `id` in the book and counts it.
    pub(crate) fn void(&self, id: &str) -> Result<Voided, Refusal> {
        let mut ledger = lock(&self.ledger);
        let voided = ledger.book.void(id)?;
        ledger.stats.voids += 1;
        Ok(voided)
    }

    /// Refunds charge `id` in the book. A paid refund is counted, as a
    /// duplicate the moment its `reference` is paid a second time, and as an
    /// over-refund if the charge's refunds now exceed its capture.
    pub(crate) fn refund(
        &self,
        id: &str,
        amount: i64,
        reference: &str,
    ) -> Result<Refunded, Refusal> {
        let mut ledger = lock(&self.ledger);
        let refunded = ledger.book.refund(id, amount)?;
        if let Refunded::Paid { .. } = refunded {
            ledger.stats.refunds += 1;
            let paid = ledger
                .refunded_by_reference
                .entry(reference.to_owned())
                .or_insert(0);
            *paid += 1;
            if *paid == 2 {
                ledger.stats.duplicate_refunds += 1;
            }
            if ledger.book.over_refunded(id) {
                ledger.stats.over_refunds += 1;
            }
        }
        Ok(refunded)
    }

    /// Forgets stats, charges, stored answers and faults, for a fresh run. Requests in
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
