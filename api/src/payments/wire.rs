//! JSON shapes of the payments API: what clients send and what they get.
//!
//! Separate from the database row and the domain types; the conversions are
//! explicit. The response follows `seeds/001` field for field: values not
//! known yet are `null`, never absent.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use common::db::operations::OperationRow;
use common::db::payments::PaymentRow;
use common::domain::OperationStatus;
use common::domain::{PaymentId, RefundId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/payments`. Unknown fields are rejected, so a misspelt optional
/// field is an error instead of silently ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "amount": 15000,
    "currency": "USD",
    "payment_method": {"type": "card", "card": {"token": "tok_visa"}},
    "order_id": "order_123456",
    "customer_id": "cust_abc123",
    "description": "Payment for Order #123456",
    "capture": true
}))]
pub struct CreatePayment {
    /// In minor units (cents): 1 to 99,999,999.
    #[schema(minimum = 1, maximum = 99_999_999)]
    pub amount: i64,
    /// ISO 4217 code of a chargeable currency, any case (answers use upper
    /// case).
    #[schema(pattern = "^[A-Za-z]{3}$", example = "USD")]
    pub currency: String,
    pub payment_method: PaymentMethodIn,
    /// Capture at once (default) or only authorise.
    pub capture: Option<bool>,
    #[schema(min_length = 1, max_length = 255)]
    pub order_id: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub invoice_id: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub customer_id: Option<String>,
    pub customer: Option<CustomerIn>,
    #[schema(min_length = 1, max_length = 1000)]
    pub description: Option<String>,
    /// Printable ASCII without `< > \ ' " *`, at least one letter.
    #[schema(
        min_length = 1,
        max_length = 22,
        pattern = "^[ !#-&()+-;=?-\\[\\]-~]*[A-Za-z][ !#-&()+-;=?-\\[\\]-~]*$"
    )]
    pub statement_descriptor: Option<String>,
    pub billing_address: Option<Address>,
    /// Up to 50 keys of 1 to 40 characters, string values of at most 500.
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethodIn {
    /// Only `card`.
    #[serde(rename = "type")]
    #[schema(pattern = "^card$", example = "card")]
    pub kind: String,
    pub card: CardIn,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardIn {
    /// A card token from the card vault, `tok_…`, or a Stripe PaymentMethod id, `pm_…`.
    #[schema(pattern = "^(tok|pm)_", max_length = 255, example = "tok_visa")]
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerIn {
    #[schema(min_length = 3, max_length = 254, example = "jane@example.com")]
    pub email: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[schema(min_length = 1, max_length = 255)]
    pub line1: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub line2: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub city: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub state: Option<String>,
    #[schema(min_length = 1, max_length = 20)]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 (answers use upper case).
    #[schema(pattern = "^[A-Za-z]{2}$", example = "US")]
    pub country: Option<String>,
}

/// The payment object of `seeds/001`, plus the processing fields a client of
/// an asynchronous API needs (`failure_code`, `attempts`, `next_attempt_at`…).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    #[schema(example = "pay_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a")]
    pub id: String,
    /// Always `payment`.
    #[schema(example = "payment")]
    pub object: String,
    pub amount: i64,
    #[schema(example = "USD")]
    pub currency: String,
    #[schema(schema_with = payment_status)]
    pub status: String,
    pub captured: bool,
    /// What an authorization still allows to capture (0 once captured,
    /// voided or released).
    pub amount_capturable: i64,
    pub amount_captured: i64,
    #[schema(format = DateTime)]
    pub captured_at: Option<String>,
    pub capture_details: Option<CaptureDetails>,
    /// Refunds that are not `failed` (pending ones included), in minor units.
    pub amount_refunded: i64,
    /// `true` once refunds cover everything captured.
    pub refunded: bool,
    #[schema(format = DateTime)]
    pub cancelled_at: Option<String>,
    /// `automatic` for an authorization the system voided after
    /// `AUTHORIZATION_TTL_HOURS`, or that the processor no longer held (see
    /// `last_operation_error`); else the reason the cancel gave.
    pub cancellation_reason: Option<String>,
    /// The latest capture, void or refund of this payment that failed, with
    /// the processor's code and message: a refused capture or void is never
    /// silent. `null` if none failed.
    pub last_operation_error: Option<OperationError>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub payment_method: PaymentMethodOut,
    pub order_id: Option<String>,
    pub invoice_id: Option<String>,
    pub customer_id: Option<String>,
    pub customer: Option<CustomerOut>,
    pub description: Option<String>,
    pub statement_descriptor: Option<String>,
    pub receipt_url: String,
    pub receipt_number: String,
    pub billing_address: Option<Address>,
    pub processor_response: ProcessorResponse,
    pub refunds: Refunds,
    pub metadata: BTreeMap<String, Value>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentMethodOut {
    #[serde(rename = "type")]
    pub kind: String,
    pub card: CardOut,
}

/// Card details; all `null` until the processor has seen the card.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct CardOut {
    pub last4: Option<String>,
    pub brand: Option<String>,
    pub exp_month: Option<u32>,
    pub exp_year: Option<u32>,
    pub fingerprint: Option<String>,
    pub country: Option<String>,
    pub funding: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerOut {
    pub id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
}

/// The processor's answer; all `null` until there is one.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ProcessorResponse {
    pub approved: Option<bool>,
    pub authorization_code: Option<String>,
    pub avs_result: Option<String>,
    pub cvv_result: Option<String>,
    pub network_transaction_id: Option<String>,
    pub processor: Option<String>,
    pub risk_score: Option<u32>,
    pub decline_code: Option<String>,
}

impl From<&common::processor::CardDetails> for CardOut {
    fn from(card: &common::processor::CardDetails) -> Self {
        Self {
            last4: Some(card.last4.clone()),
            brand: Some(card.brand.clone()),
            exp_month: Some(card.exp_month),
            exp_year: Some(card.exp_year),
            fingerprint: Some(card.fingerprint.clone()),
            country: Some(card.country.clone()),
            funding: Some(card.funding.clone()),
        }
    }
}

/// Everything we keep but the processor's own charge id.
impl From<&common::processor::ProcessorResponse> for ProcessorResponse {
    fn from(kept: &common::processor::ProcessorResponse) -> Self {
        Self {
            approved: kept.approved,
            authorization_code: kept.authorization_code.clone(),
            avs_result: kept.avs_result.clone(),
            cvv_result: kept.cvv_result.clone(),
            network_transaction_id: kept.network_transaction_id.clone(),
            processor: kept.processor.clone(),
            risk_score: kept.risk_score,
            decline_code: kept.decline_code.clone(),
        }
    }
}

/// What a capture did, once the payment is captured.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaptureDetails {
    /// Minor units captured.
    pub captured_amount: i64,
    #[schema(format = DateTime)]
    pub capture_time: String,
    /// The processor's id of the capture.
    pub processor_capture_id: String,
}

/// A capture, void or refund that ended `failed`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationError {
    /// `capture`, `void` or `refund`.
    #[serde(rename = "type")]
    #[schema(example = "capture")]
    pub kind: String,
    /// The processor's code (`charge_not_capturable`, `charge_not_voidable`,
    /// `amount_exceeds_capturable`, `refund_declined`…) or `not_processed`.
    #[schema(example = "charge_not_capturable")]
    pub failure_code: String,
    pub failure_message: String,
    #[schema(format = DateTime)]
    pub failed_at: String,
}

/// The stored `last_operation_error`, as the API shows it.
#[derive(Deserialize)]
struct StoredOperationError {
    #[serde(rename = "type")]
    kind: String,
    failure_code: Option<String>,
    failure_message: Option<String>,
    failed_at: DateTime<Utc>,
}

impl OperationError {
    fn from_stored(value: &Value) -> Option<Self> {
        let stored: StoredOperationError = serde_json::from_value(value.clone()).ok()?;
        Some(Self {
            kind: stored.kind,
            failure_code: stored.failure_code.unwrap_or_default(),
            failure_message: stored.failure_message.unwrap_or_default(),
            failed_at: timestamp(stored.failed_at),
        })
    }
}

/// The payment's refunds: the latest [`Refunds::EMBEDDED`], or all of them
/// with `expand[]=refunds`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Refunds {
    pub total_refunded: i64,
    pub has_more: bool,
    pub data: Vec<Refund>,
}

impl Refunds {
    pub const EMBEDDED: usize = 10;
}

/// A refund (`ref_…`), as `GET /v1/refunds/:id` shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Refund {
    pub id: String,
    pub object: String,
    pub amount: i64,
    pub currency: String,
    pub payment_id: String,
    /// `pending`, `succeeded` or `failed` (`processing` reads as `pending`).
    #[schema(schema_with = refund_status)]
    pub status: String,
    pub reason: Option<String>,
    pub notes: Option<String>,
    pub metadata: Value,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub processor_refund_id: Option<String>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub processed_at: Option<String>,
}

impl Refund {
    pub fn from_row(row: &OperationRow) -> Self {
        Self {
            id: RefundId::from(row.id).to_string(),
            object: "refund".into(),
            amount: row.amount,
            currency: row.currency.to_string(),
            payment_id: PaymentId(row.payment_id).to_string(),
            // A refund being worked on is `pending` to the merchant.
            status: match row.status {
                OperationStatus::Processing => "pending".into(),
                other => other.as_str().into(),
            },
            reason: row.reason.clone(),
            notes: row.notes.clone(),
            metadata: row.metadata.0.clone(),
            failure_code: row.failure_code.clone(),
            failure_message: row.failure_message.clone(),
            processor_refund_id: row.processor_id.clone(),
            last_error: row.last_error.clone(),
            created_at: timestamp(row.created_at),
            processed_at: row.finished_at.map(timestamp),
        }
    }
}

/// RFC 3339 in UTC with whole seconds, as in the seeds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `2234-5678`-style receipt number from the sequence.
pub fn receipt_number(n: i64) -> String {
    format!("{:04}-{:04}", n / 10_000, n % 10_000)
}

impl Payment {
    pub fn from_row(row: &PaymentRow, public_base_url: &str) -> Self {
        let id = PaymentId(row.id).to_string();
        let card = row
            .card
            .as_ref()
            .map(|c| CardOut::from(&c.0))
            .unwrap_or_default();
        let processor_response = row
            .processor_response
            .as_ref()
            .map(|p| ProcessorResponse::from(&p.0))
            .unwrap_or_default();
        let customer =
            (row.customer_email.is_some() || row.customer_name.is_some()).then(|| CustomerOut {
                id: row.customer_id.clone(),
                email: row.customer_email.clone(),
                name: row.customer_name.clone(),
            });
        let metadata = match &row.metadata.0 {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => BTreeMap::new(),
        };
        Self {
            receipt_url: format!("{}/receipts/{id}", public_base_url.trim_end_matches('/')),
            id,
            object: "payment".into(),
            amount: row.amount,
            currency: row.currency.to_string(),
            status: row.status.to_string(),
            captured: row.captured,
            amount_capturable: row.amount_capturable,
            amount_captured: row.amount_captured,
            captured_at: row.captured_at.map(timestamp),
            capture_details: row
                .capture_details
                .as_ref()
                .and_then(|d| serde_json::from_value(d.0.clone()).ok()),
            amount_refunded: row.amount_refunded,
            refunded: row.amount_captured > 0 && row.amount_refunded == row.amount_captured,
            cancelled_at: row.cancelled_at.map(timestamp),
            cancellation_reason: row.cancellation_reason.clone(),
            last_operation_error: row
                .last_operation_error
                .as_ref()
                .and_then(|e| OperationError::from_stored(&e.0)),
            created_at: timestamp(row.created_at),
            updated_at: timestamp(row.updated_at),
            payment_method: PaymentMethodOut {
                kind: "card".into(),
                card,
            },
            order_id: row.order_id.clone(),
            invoice_id: row.invoice_id.clone(),
            customer_id: row.customer_id.clone(),
            customer,
            description: row.description.clone(),
            statement_descriptor: row.statement_descriptor.clone(),
            receipt_number: receipt_number(row.receipt_number),
            billing_address: row
                .billing_address
                .as_ref()
                .and_then(|a| serde_json::from_value(a.0.clone()).ok()),
            processor_response,
            // Filled by `with_refunds`; a payment with no refund has none.
            refunds: Refunds {
                total_refunded: row.amount_refunded,
                has_more: false,
                data: Vec::new(),
            },
            metadata,
            failure_code: row.failure_code.clone(),
            failure_message: row.failure_message.clone(),
            attempts: row.attempts,
            last_error: row.last_error.clone(),
            next_attempt_at: row.next_attempt_at.map(timestamp),
        }
    }
}

impl Payment {
    /// Sets the refunds list from `rows` (newest first); `all` is whether
    /// `rows` holds every refund, else only the latest are shown and
    /// `has_more` says whether there are others.
    pub fn with_refunds(mut self, rows: &[OperationRow], all: bool) -> Self {
        let shown = if all {
            rows.len()
        } else {
            rows.len().min(Refunds::EMBEDDED)
        };
        self.refunds.has_more = rows.len() > shown;
        self.refunds.data = rows[..shown].iter().map(Refund::from_row).collect();
        self
    }
}

/// `status` of a payment: one of the lifecycle's states.
pub fn payment_status() -> utoipa::openapi::schema::Schema {
    let all = [
        common::domain::PaymentStatus::Pending,
        common::domain::PaymentStatus::Processing,
        common::domain::PaymentStatus::Succeeded,
        common::domain::PaymentStatus::Failed,
        common::domain::PaymentStatus::Cancelled,
    ];
    utoipa::openapi::schema::Schema::Object(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(all.map(common::domain::PaymentStatus::as_str)))
            .description(Some(
                "`pending` → `processing` → `succeeded` | `failed`; `cancelled` if cancelled \
                 before processing or its authorization voided.",
            ))
            .build(),
    )
}

/// `status` of a refund (`processing` reads as `pending`).
pub fn refund_status() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::Schema::Object(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["pending", "succeeded", "failed"]))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_numbers_look_like_the_seed() {
        assert_eq!(receipt_number(22_345_678), "2234-5678");
        assert_eq!(receipt_number(1), "0000-0001");
    }

    #[test]
    fn timestamps_have_whole_seconds_and_z() {
        let at = DateTime::parse_from_rfc3339("2024-01-19T15:30:00.123+00:00")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid time");
        assert_eq!(timestamp(at), "2024-01-19T15:30:00Z");
    }
}
