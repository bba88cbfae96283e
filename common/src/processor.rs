//! The card processor's HTTP protocol: the wire types of `POST /v1/charges`,
//! of what follows a charge (capture, void, refund), of the lookups, and of
//! the simulator's fault control.
//!
//! Shared by `processor-sim` (server) and the worker (client) so the two can
//! never disagree on a field name.
//!
//! A charge request carries an `Idempotency-Key` header (the payment id): a
//! repeated key returns the first result and never charges again. Answers:
//! `200` with [`ChargeApproved`], `402` with [`ChargeDeclined`]; `429` and
//! `5xx` are transient and may be retried with the same key.
//!
//! After an approved charge:
//! - `POST /v1/charges/:id/capture` ([`CaptureRequest`] → [`CaptureSucceeded`])
//!   moves the money of an authorization (`capture: false`), all of it or
//!   less; the rest is released.
//! - `POST /v1/charges/:id/void` ([`VoidRequest`] → [`VoidSucceeded`])
//!   releases an authorization that will not be captured.
//! - `POST /v1/refunds` ([`RefundRequest`] → [`RefundSucceeded`], or `402`
//!   [`RefundDeclined`]) gives back part or all of what was captured.
//!
//! Each takes an `Idempotency-Key` exactly as a charge does (keys of different
//! kinds of operation never collide; capture and void keys are scoped to
//! their charge) and goes through the same faults. A request the charge's
//! state rules out is refused with `409` ([`CHARGE_NOT_CAPTURABLE_CODE`],
//! [`CHARGE_NOT_VOIDABLE_CODE`], [`CHARGE_NOT_REFUNDABLE_CODE`]) or, when
//! the amount is too large, `400` ([`AMOUNT_EXCEEDS_CAPTURABLE_CODE`],
//! [`AMOUNT_EXCEEDS_REFUNDABLE_CODE`]); those refusals are stored under the
//! key like any answer, because the processor has decided. An unknown charge
//! is `404` [`NO_SUCH_CHARGE_CODE`] and, like a malformed request or a fault,
//! is not stored.
//!
//! When an answer is lost (a timeout, a cut connection), the client asks what
//! happened with a `GET` at the operation's path and `?idempotency_key=<key>`
//! (`GET /v1/charges`, `GET /v1/charges/:id/capture`,
//! `GET /v1/charges/:id/void`, `GET /v1/refunds`): the stored answer, byte for
//! byte as it was first sent (waiting for an operation with that key still in
//! progress), or `404` with [`OPERATION_NOT_FOUND_CODE`] when the processor
//! never took the key, so retrying with it is safe.
//!
//! Every error is the envelope [`ProcessorErrorBody`].

use serde::{Deserialize, Serialize};

/// Header that makes a charge, capture, void or refund idempotent.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Query parameter of a lookup (e.g. `GET /v1/charges?idempotency_key=<key>`):
/// the `Idempotency-Key` the operation was sent with.
pub const LOOKUP_QUERY_PARAM: &str = "idempotency_key";

/// `error.code` of a lookup's `404` when the processor never took an
/// operation with that key: nothing happened, so the client may send it again
/// with the same key. The same code for every kind of lookup. A client must
/// check it: a `404` without it (say, from a wrong base URL) proves nothing.
pub const OPERATION_NOT_FOUND_CODE: &str = "operation_not_found";

/// `error.code` of a `404` from capture, void or refund: no charge has that
/// id. Not stored under the idempotency key.
pub const NO_SUCH_CHARGE_CODE: &str = "no_such_charge";

/// `error.code` of a `409` from capture: the charge is not an approved,
/// uncaptured, unvoided authorization (declined, captured already, voided).
pub const CHARGE_NOT_CAPTURABLE_CODE: &str = "charge_not_capturable";

/// `error.code` of a `400` from capture: the amount is above the authorized
/// amount.
pub const AMOUNT_EXCEEDS_CAPTURABLE_CODE: &str = "amount_exceeds_capturable";

/// `error.code` of a `409` from void: only an approved authorization that is
/// neither captured nor voided can be voided.
pub const CHARGE_NOT_VOIDABLE_CODE: &str = "charge_not_voidable";

/// `error.code` of a `409` from refund: only a captured charge can be
/// refunded.
pub const CHARGE_NOT_REFUNDABLE_CODE: &str = "charge_not_refundable";

/// `error.code` of a `400` from refund: the amount is above what is still
/// refundable (captured minus refunds that succeeded).
pub const AMOUNT_EXCEEDS_REFUNDABLE_CODE: &str = "amount_exceeds_refundable";

/// [`RefundDeclined::code`] when the card's issuer refuses the refund
/// (`tok_refundFails` in the simulator).
pub const REFUND_DECLINED_CODE: &str = "refund_declined";

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

/// What we keep of the processor's answer to a charge
/// (`payments.processor_response`): written by the worker, read back by the
/// API (which shows every field but `charge_id`) and by capture, void and
/// refund (which need `charge_id`). One type on both sides, so writer and
/// readers cannot drift apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorResponse {
    pub approved: Option<bool>,
    pub authorization_code: Option<String>,
    pub avs_result: Option<String>,
    pub cvv_result: Option<String>,
    pub network_transaction_id: Option<String>,
    /// Our name for the processor (`PROCESSOR_NAME`).
    pub processor: Option<String>,
    pub risk_score: Option<u32>,
    pub decline_code: Option<String>,
    /// The processor's charge id, which later operations name.
    pub charge_id: Option<String>,
}

impl ProcessorResponse {
    pub fn approved(charge: &ChargeApproved, processor: &str) -> Self {
        Self {
            approved: Some(true),
            // A processor that does not give one (Stripe has no
            // authorization code for every card) leaves it `null`, not "".
            authorization_code: non_empty(&charge.authorization_code),
            avs_result: non_empty(&charge.avs_result),
            cvv_result: non_empty(&charge.cvv_result),
            network_transaction_id: non_empty(&charge.network_transaction_id),
            processor: Some(processor.to_owned()),
            risk_score: Some(charge.risk_score),
            decline_code: None,
            charge_id: Some(charge.id.clone()),
        }
    }

    pub fn declined(charge: &ChargeDeclined, processor: &str) -> Self {
        Self {
            approved: Some(false),
            network_transaction_id: non_empty(&charge.network_transaction_id),
            processor: Some(processor.to_owned()),
            risk_score: Some(charge.risk_score),
            decline_code: Some(charge.decline_code.clone()),
            charge_id: Some(charge.id.clone()),
            ..Self::default()
        }
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Body of `POST /v1/charges/:id/capture`. The body may also be left empty,
/// which is the same as `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Minor units to capture, at most the authorized amount; absent captures
    /// all of it. What is not captured is released to the cardholder.
    #[serde(default)]
    pub amount: Option<i64>,
    /// What the cardholder's statement shows for this capture, when the
    /// capture request gave one (the payment's own otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_descriptor: Option<String>,
}

/// `200`: the authorization was captured; the money moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureSucceeded {
    /// The capture's own id, `cap_…`: what the payment records as its
    /// `processor_capture_id`.
    pub id: String,
    /// The charge (`ch_…`) captured.
    pub charge: String,
    /// Minor units captured: the most that can later be refunded.
    pub amount: i64,
    pub currency: String,
    /// Always `true`, as gateways say it.
    pub captured: bool,
    /// Minor units of the authorization released by a partial capture.
    pub amount_released: i64,
}

/// Body of `POST /v1/charges/:id/void`: no fields today; the body may be left
/// empty. A struct so that fields can be added without changing the client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoidRequest {}

/// `200`: the authorization was voided and its amount released; it can never
/// be captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidSucceeded {
    /// The void's own id, `void_…`.
    pub id: String,
    /// The charge (`ch_…`) voided.
    pub charge: String,
    /// Always `true`, as gateways say it.
    pub voided: bool,
    /// Minor units released: the whole authorized amount.
    pub amount: i64,
    pub currency: String,
}

/// Body of `POST /v1/refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// The charge (`ch_…`) to refund; it must be captured.
    pub charge: String,
    /// Minor units to give back, at most what is still refundable.
    pub amount: i64,
    /// Our own id of the refund (`ref_…`), independent of the idempotency
    /// key. The simulator counts successful refunds per reference, which is
    /// how it detects a refund paid out twice.
    pub reference: String,
}

/// Where a refund ended. Terminal either way: the simulator settles refunds
/// at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Succeeded,
    Failed,
}

/// `200`: the refund was paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundSucceeded {
    /// The refund's id at the processor, `re_…`: what the refund records as
    /// its `processor_refund_id`.
    pub id: String,
    pub charge: String,
    pub amount: i64,
    pub currency: String,
    /// [`RefundStatus::Succeeded`].
    pub status: RefundStatus,
    /// The [`RefundRequest::reference`] it was asked with.
    pub reference: String,
}

/// `402`: the issuer refused the refund. A business outcome, like a declined
/// charge: terminal, never retried; nothing was paid and the amount stays
/// refundable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundDeclined {
    pub id: String,
    pub charge: String,
    pub amount: i64,
    pub currency: String,
    /// [`RefundStatus::Failed`].
    pub status: RefundStatus,
    /// [`REFUND_DECLINED_CODE`].
    pub code: String,
    pub message: String,
    pub reference: String,
}

/// `PUT /_sim/faults`: every field optional; absent fields keep their value.
/// Captures, voids and refunds go through every fault as charges do; lookups
/// go through the latency, outage and error faults, never the timeout fault.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    /// Share of operations and lookups answered `500` before acting (0..=1).
    pub error_rate: Option<f64>,
    /// Share of operations (charge, capture, void, refund) that act, then
    /// answer only after a long delay, so the client times out with the
    /// outcome unknown (0..=1).
    pub timeout_rate: Option<f64>,
    /// Latency added to every operation and lookup.
    pub latency_ms: Option<u64>,
    /// `true`: every operation and lookup is answered `503`.
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
    /// Operations (of any kind) answered from the idempotency store.
    pub replays: u64,
    /// Lookups of an operation by idempotency key received, whatever their
    /// outcome. A lookup never charges: it only reads the stored answer.
    pub lookups: u64,
    /// Authorizations captured by `POST /v1/charges/:id/capture`, not counting
    /// idempotent replays (a charge with `capture: true` is not one).
    pub captures: u64,
    /// Authorizations voided, not counting idempotent replays.
    pub voids: u64,
    /// Every `POST /v1/charges/:id/capture` received, whatever its outcome
    /// (refusals and replays included).
    pub capture_requests: u64,
    /// Every `POST /v1/charges/:id/void` received, whatever its outcome.
    pub void_requests: u64,
    /// Refunds paid (declined ones not counted), not counting replays.
    pub refunds: u64,
    /// Refunds (by `reference`) paid more than once. Must stay 0.
    pub duplicate_refunds: u64,
    /// Refunds that took a charge's refunded total beyond what it captured.
    /// The simulator refuses those, so this must stay 0; it is counted
    /// independently of that check, as the evidence.
    pub over_refunds: u64,
}
