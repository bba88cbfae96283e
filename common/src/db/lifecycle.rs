//! What a job's lifecycle needs, payments' and operations' alike: who made
//! a change and why ([`Audit`]), the API request behind it ([`Origin`]),
//! and a retry to schedule with what is known of the last call
//! ([`Retry`], [`Knowledge`]). The transitions themselves are in
//! [`super::payments`] and [`super::operations`], each a statement of the
//! shape of [`super::sql`]'s `transition!`.

use std::time::Duration;

/// The API request behind a change: its id and `Idempotency-Key`, kept in
/// the history row so the change's event can name it. Empty for changes
/// the worker makes.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Who made a change and why, for the history table.
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    pub actor: &'a str,
    pub reason: &'a str,
}

/// What the latest processor call left us knowing, for the `schedule_retry` of payments and operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knowledge {
    /// The call may have reached the processor: mark the outcome unknown
    /// (keeping the earliest time it became so).
    Unknown,
    /// The processor certainly did not act on it (refused before acting, or
    /// a lookup found nothing): the outcome is known again.
    NotProcessed,
}

/// A retry to schedule after a transient error: in `delay` (jittered
/// within the retry tier `tier`). The rescuer looks again only after the
/// tier's full delay, the upper bound of the jitter, so a retry waiting in
/// its tier never looks overdue.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    pub last_error: &'a str,
    pub delay: Duration,
    pub tier: Duration,
    pub knowledge: Knowledge,
}
