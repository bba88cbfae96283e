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

use serde::{Deserialize, Serialize};

/// Header that makes a charge idempotent.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    /// Share of charge requests answered `500` before charging (0..=1).
    pub error_rate: Option<f64>,
    /// Share of charge requests that charge, then answer only after a long
    /// delay, so the client times out with the outcome unknown (0..=1).
    pub timeout_rate: Option<f64>,
    /// Latency added to every charge request.
    pub latency_ms: Option<u64>,
    /// `true`: every charge request is answered `503`.
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

/// `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}
