//! The messages on the queues: one tagged, versioned enum.
//!
//! A message names the work, never its state: the payment row in PostgreSQL
//! is the truth, so a duplicated or stale message is harmless (the worker's
//! guarded update decides). A new message version is a new variant; workers
//! keep decoding the old one until no producer sends it.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{OperationId, PaymentId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Job {
    /// Charge this payment (or find out it is already done).
    #[serde(rename = "process_payment.v1")]
    ProcessPaymentV1 {
        payment_id: PaymentId,
        merchant_id: Uuid,
    },
    /// Carry out this capture, void or refund of a payment (or find out it
    /// is already done): a row of `operations`.
    #[serde(rename = "operation.v1")]
    OperationV1 {
        operation_id: OperationId,
        payment_id: PaymentId,
        merchant_id: Uuid,
    },
}

impl Job {
    pub fn process_payment(payment_id: PaymentId, merchant_id: Uuid) -> Self {
        Self::ProcessPaymentV1 {
            payment_id,
            merchant_id,
        }
    }

    pub fn operation(operation_id: OperationId, payment_id: PaymentId, merchant_id: Uuid) -> Self {
        Self::OperationV1 {
            operation_id,
            payment_id,
            merchant_id,
        }
    }

    pub fn payment_id(&self) -> PaymentId {
        match self {
            Self::ProcessPaymentV1 { payment_id, .. } | Self::OperationV1 { payment_id, .. } => {
                *payment_id
            }
        }
    }

    /// The operation a job is about; `None` for a payment's charge.
    pub fn operation_id(&self) -> Option<OperationId> {
        match self {
            Self::ProcessPaymentV1 { .. } => None,
            Self::OperationV1 { operation_id, .. } => Some(*operation_id),
        }
    }

    /// What the job's row is, in messages: `payment` or `operation`.
    pub fn subject(&self) -> &'static str {
        match self {
            Self::ProcessPaymentV1 { .. } => "payment",
            Self::OperationV1 { .. } => "operation",
        }
    }

    pub fn merchant_id(&self) -> Uuid {
        match self {
            Self::ProcessPaymentV1 { merchant_id, .. } | Self::OperationV1 { merchant_id, .. } => {
                *merchant_id
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a plain enum of ids cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Header names and helpers. Headers carry the attempt number and, on dead
/// letters, why the job was given up.
pub mod headers {
    use super::*;

    /// Processing attempts made so far (set on retries and dead letters).
    pub const ATTEMPT: &str = "x-attempt";
    /// Why a job was dead-lettered (`attempts_exhausted`, `undecodable`,
    /// `unknown_payment`, ...).
    pub const DEAD_REASON: &str = "x-dead-reason";
    /// The last error seen before dead-lettering.
    pub const LAST_ERROR: &str = "x-last-error";
    /// RFC 3339 time of dead-lettering.
    pub const DEAD_AT: &str = "x-dead-lettered-at";

    pub fn build(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in pairs {
            table.insert(ShortString::from(*key), value.clone());
        }
        table
    }

    pub fn string(value: impl Into<String>) -> AMQPValue {
        AMQPValue::LongString(value.into().into())
    }

    pub fn int(value: i64) -> AMQPValue {
        AMQPValue::LongLongInt(value)
    }

    /// A header as text, whatever AMQP type the producer chose.
    pub fn get_string(table: Option<&FieldTable>, key: &str) -> Option<String> {
        match table?.inner().get(key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            other => get_int_value(other).map(|n| n.to_string()),
        }
    }

    /// A header as an integer, whatever integer type the producer chose.
    pub fn get_int(table: Option<&FieldTable>, key: &str) -> Option<i64> {
        get_int_value(table?.inner().get(key)?)
    }

    fn get_int_value(value: &AMQPValue) -> Option<i64> {
        match value {
            AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
            AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
            AMQPValue::ShortInt(n) => Some(i64::from(*n)),
            AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
            AMQPValue::LongInt(n) => Some(i64::from(*n)),
            AMQPValue::LongUInt(n) => Some(i64::from(*n)),
            AMQPValue::LongLongInt(n) => Some(*n),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_wire_form_is_tagged_and_versioned() {
        let id: PaymentId = "pay_0901f083-aa1c-43c5-af5c-0a9d2fc64e30"
            .parse()
            .expect("valid id");
        let merchant = Uuid::nil();
        let job = Job::process_payment(id, merchant);
        let json: serde_json::Value = serde_json::from_slice(&job.to_bytes()).expect("valid json");
        assert_eq!(json["type"], "process_payment.v1");
        assert_eq!(
            json["payment_id"],
            "pay_0901f083-aa1c-43c5-af5c-0a9d2fc64e30"
        );
        assert_eq!(Job::from_bytes(&job.to_bytes()).ok(), Some(job));
    }

    #[test]
    fn unknown_versions_and_garbage_do_not_decode() {
        assert!(Job::from_bytes(br#"{"type":"process_payment.v9","payment_id":"x"}"#).is_err());
        assert!(Job::from_bytes(b"\xff\x00").is_err());
    }

    #[test]
    fn header_helpers_read_any_integer_type() {
        let table = headers::build(&[("a", AMQPValue::LongInt(3)), ("b", headers::string("why"))]);
        assert_eq!(headers::get_int(Some(&table), "a"), Some(3));
        assert_eq!(
            headers::get_string(Some(&table), "b").as_deref(),
            Some("why")
        );
        assert_eq!(headers::get_int(Some(&table), "missing"), None);
    }
}
