//! The card processor's HTTP protocol: the wire types of `POST /v1/charges`
//! and of the simulator's fault control.
//!
//! Shared by `processor-sim` (server) and the worker (client) so the two can
//! never disagree on a field name.
//!
//! A charge request carries an `Idempotency-Key` header (the payment id): a
//! repeated key returns the first result and never charges again. Answers:
//! `200` with [`ChargeApproved`], `402` with [`ChargeDeclined`]; `429` and
//! `5xx` are transient and may be retried with the same key.
//!
//! When a charge's answer is lost (a timeout, a cut connection), the client
//! asks what happened with `GET /v1/charges?idempotency_key=<key>`: the stored
//! answer, byte for byte as it was first sent (waiting for a charge with that
//! key still in progress), or `404` with [`OPERATION_NOT_FOUND_CODE`] when the
//! processor never took the key, so retrying with it is safe.
//!
//! Every error is the envelope [`ProcessorErrorBody`].

use serde::{Deserialize, Serialize};

/// Header that makes a charge idempotent.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Query parameter of a lookup (`GET /v1/charges?idempotency_key=<key>`):
/// the `Idempotency-Key` the operation was sent with.
pub const LOOKUP_QUERY_PARAM: &str = "idempotency_key";

/// `error.code` of a lookup's `404` when the processor never took an
/// operation with that key: nothing happened, so the client may send it again
/// with the same key. The same code for every kind of lookup. A client must
/// check it: a `404` without it (say, from a wrong base URL) proves nothing.
pub const OPERATION_NOT_FOUND_CODE: &str = "operation_not_found";

/// The body of every error answer of the processor, so a client can read the
/// `code` it branches on (e.g. [`OPERATION_NOT_FOUND_CODE`]) whatever failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorErrorBody {
    pub error: ProcessorError,
}

/// The inside of [`ProcessorErrorBody`]: a stable machine `code` and a message
/// for people, which clients must not parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorError {
    pub code: String,
    pub message: String,
}

/// Body of `POST /v1/charges`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    pub amount: i64,
    pub currency: String,
    /// The card token. Never logged: `ChargeRequest`'s `Debug` is not used in
    /// any log line, and the worker logs only the payment id.
    pub token: String,
    pub capture: bool,
    pub description: Option<String>,
    pub statement_descriptor: Option<String>,
    /// Our own reference for the charge (the payment id), independent of the
    /// idempotency key. The simulator counts charges per reference, which is
    /// how it detects a payment charged twice.
    pub reference: String,
}

/// Card details the processor knows once it has seen the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardDetails {
    pub last4: String,
    pub brand: String,
    pub exp_month: u32,
    pub exp_year: u32,
    pub fingerprint: String,
    pub country: String,
    pub funding: String,
}

/// `200`: the charge was approved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeApproved {
    pub id: String,
    pub approved: bool,
    pub captured: bool,
    pub authorization_code: String,
    pub avs_result: String,
    pub cvv_result: String,
    pub network_transaction_id: String,
    pub risk_score: u32,
    pub card: CardDetails,
}

/// `402`: the card was declined. A business outcome: terminal, never retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeDeclined {
    pub id: String,
    pub approved: bool,
    /// `card_declined`, `incorrect_cvc`, `expired_card`, `processing_error`.
    pub code: String,
    /// The issuer's reason, e.g. `generic_decline`, `insufficient_funds`.
    pub decline_code: String,
    pub message: String,
    pub network_transaction_id: String,
    pub risk_score: u32,
    pub card: CardDetails,
}

/// `PUT /_sim/faults`: every field optional; absent fields keep their value.
/// Lookups go through the latency, outage and error faults like charges, but
/// never the timeout fault.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    /// Share of charge requests and lookups answered `500` before acting
    /// (0..=1).
    pub error_rate: Option<f64>,
    /// Share of charge requests that charge, then answer only after a long
    /// delay, so the client times out with the outcome unknown (0..=1).
    pub timeout_rate: Option<f64>,
    /// Latency added to every charge request and lookup.
    pub latency_ms: Option<u64>,
    /// `true`: every charge request and lookup is answered `503`.
    pub outage: Option<bool>,
}

/// The simulator's current fault settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    pub error_rate: f64,
    pub timeout_rate: f64,
    pub latency_ms: u64,
    pub outage: bool,
}

/// `GET /_sim/stats`. Fields added after the first release default to 0 when
/// absent, so a client can still read an older simulator's stats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimStats {
    /// Charges created (approved), not counting idempotent replays.
    pub charges: u64,
    /// Payments (by `reference`) charged more than once. Must stay 0.
    pub duplicate_charges: u64,
    /// Every `POST /v1/charges` received, whatever its outcome.
    pub requests: u64,
    /// Charges declined.
    pub declines: u64,
    /// Requests answered from the idempotency store.
    pub replays: u64,
    /// Lookups of an operation by idempotency key received, whatever their
    /// outcome. A lookup never charges: it only reads the stored answer.
    pub lookups: u64,
}
