//! Validating a payment request at the edge (DESIGN.md §5); the body is
//! read and decoded by [`crate::request`].
//!
//! Every failure is a 400 naming the offending `param` (a dotted path such as
//! `payment_method.card.token`), and nothing is written. Rejected values are
//! never echoed back: they may be card tokens or personal data.
//!
//! No stored string may hold a control character: PostgreSQL refuses NUL in
//! `text` and `jsonb` (which used to surface as a 500), and the others (escape
//! sequences, line breaks in an id) only ever arrive by mistake or malice and
//! then reach receipts, logs and terminals. A JSON object may not repeat a
//! key either: which copy wins is parser trivia, and a client that sends two
//! should hear about it.

use std::collections::BTreeMap;

use common::db::payments::NewPayment;
use common::domain::{Amount, CardToken, Currency, PaymentId};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{ApiError, DomainResultExt as _};
use crate::wire::{Address, CreatePayment};

const MAX_ID_LEN: usize = 255;
const MAX_DESCRIPTION_LEN: usize = 1000;
const MAX_DESCRIPTOR_LEN: usize = 22;
pub(crate) const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;

/// Whether a string holds a control character (Unicode category Cc: NUL,
/// escape, line breaks, DEL, the C1 range).
pub(crate) fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

pub(crate) fn check_len(
    param: &str,
    value: &Option<String>,
    min: usize,
    max: usize,
) -> Result<(), ApiError> {
    if let Some(value) = value {
        let len = value.chars().count();
        if len < min || len > max {
            return Err(ApiError::invalid(
                param,
                "invalid_length",
                format!("`{param}` must be {min} to {max} characters."),
            ));
        }
        if has_control(value) {
            return Err(ApiError::invalid(
                param,
                "invalid_characters",
                format!("`{param}` must not contain control characters."),
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_descriptor(value: &Option<String>) -> Result<(), ApiError> {
    const PARAM: &str = "statement_descriptor";
    check_len(PARAM, value, 1, MAX_DESCRIPTOR_LEN)?;
    if let Some(value) = value {
        // What card networks print: ASCII, no characters that break
        // statements, and at least one letter.
        let printable = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && !b"<>\\'\"*".contains(&b));
        if !printable || !value.bytes().any(|b| b.is_ascii_alphabetic()) {
            return Err(ApiError::invalid(
                PARAM,
                "invalid_statement_descriptor",
                "`statement_descriptor` must be printable ASCII without < > \\ ' \" *, with at least one letter.",
            ));
        }
    }
    Ok(())
}

fn check_address(address: &Address) -> Result<(), ApiError> {
    check_len("billing_address.line1", &address.line1, 1, 255)?;
    check_len("billing_address.line2", &address.line2, 1, 255)?;
    check_len("billing_address.city", &address.city, 1, 255)?;
    check_len("billing_address.state", &address.state, 1, 255)?;
    check_len("billing_address.postal_code", &address.postal_code, 1, 20)?;
    if let Some(country) = &address.country {
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ApiError::invalid(
                "billing_address.country",
                "invalid_country",
                "`billing_address.country` must be a two-letter ISO 3166-1 code.",
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<Value, ApiError> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ApiError::invalid(
            "metadata",
            "too_many_metadata_keys",
            format!("`metadata` may have at most {MAX_METADATA_KEYS} keys."),
        ));
    }
    for (key, value) in metadata {
        let key_len = key.chars().count();
        // The key is not echoed in `param` when it is itself the problem.
        if key_len == 0 || key_len > MAX_METADATA_KEY_LEN || has_control(key) {
            return Err(ApiError::invalid(
                "metadata",
                "invalid_metadata_key",
                format!(
                    "`metadata` keys must be 1 to {MAX_METADATA_KEY_LEN} characters, \
                     without control characters."
                ),
            ));
        }
        if value.chars().count() > MAX_METADATA_VALUE_LEN {
            return Err(ApiError::invalid(
                format!("metadata.{key}"),
                "invalid_metadata_value",
                format!("`metadata` values must be at most {MAX_METADATA_VALUE_LEN} characters."),
            ));
        }
        if has_control(value) {
            return Err(ApiError::invalid(
                format!("metadata.{key}"),
                "invalid_characters",
                "`metadata` values must not contain control characters.",
            ));
        }
    }
    Ok(Value::Object(
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    ))
}

/// Checks every rule and builds the payment to insert.
pub fn validate(request: CreatePayment, merchant_id: Uuid) -> Result<NewPayment, ApiError> {
    let amount = Amount::parse(request.amount).invalid("amount", "invalid_amount")?;
    let currency = Currency::parse(&request.currency).invalid("currency", "invalid_currency")?;
    if request.payment_method.kind != "card" {
        return Err(ApiError::invalid(
            "payment_method.type",
            "unsupported_payment_method",
            "`payment_method.type` must be `card`.",
        ));
    }
    let card_token = CardToken::parse(&request.payment_method.card.token)
        .invalid("payment_method.card.token", "invalid_card_token")?;
    check_len("order_id", &request.order_id, 1, MAX_ID_LEN)?;
    check_len("invoice_id", &request.invoice_id, 1, MAX_ID_LEN)?;
    check_len("customer_id", &request.customer_id, 1, MAX_ID_LEN)?;
    check_len("description", &request.description, 1, MAX_DESCRIPTION_LEN)?;
    check_descriptor(&request.statement_descriptor)?;
    let (customer_email, customer_name) = match request.customer {
        Some(customer) => {
            check_len("customer.email", &customer.email, 3, 254)?;
            if customer.email.as_deref().is_some_and(|e| {
                let mut parts = e.splitn(2, '@');
                let local = parts.next().unwrap_or_default();
                let domain = parts.next().unwrap_or_default();
                local.is_empty() || !domain.contains('.') || e.contains(char::is_whitespace)
            }) {
                return Err(ApiError::invalid(
                    "customer.email",
                    "invalid_email",
                    "`customer.email` must be an e-mail address.",
                ));
            }
            check_len("customer.name", &customer.name, 1, 255)?;
            (customer.email, customer.name)
        }
        None => (None, None),
    };
    let billing_address = match &request.billing_address {
        Some(address) => {
            check_address(address)?;
            let mut address = address.clone();
            address.country = address.country.map(|c| c.to_ascii_uppercase());
            Some(serde_json::to_value(address)?)
        }
        None => None,
    };
    let metadata = check_metadata(&request.metadata.unwrap_or_default())?;
    Ok(NewPayment {
        id: PaymentId::new(),
        merchant_id,
        amount,
        currency,
        capture: request.capture.unwrap_or(true),
        card_token,
        order_id: request.order_id,
        invoice_id: request.invoice_id,
        customer_id: request.customer_id,
        customer_email,
        customer_name,
        description: request.description,
        statement_descriptor: request.statement_descriptor,
        billing_address,
        metadata,
        notify_on_finish: false,
        origin: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error_param(body: &[u8]) -> String {
        let err = crate::request::parse_json(body)
            .and_then(|req| validate(req, Uuid::nil()))
            .expect_err("must fail");
        format!("{err:?}")
    }

    #[test]
    fn unknown_and_missing_fields_name_their_path() {
        let unknown = error_param(br#"{"amount":1,"currency":"usd","payment_method":{"type":"card","card":{"token":"tok_visa","cvc":"123"}}}"#);
        assert!(unknown.contains("payment_method.card.cvc"), "{unknown}");
        let missing = error_param(
            br#"{"currency":"usd","payment_method":{"type":"card","card":{"token":"tok_visa"}}}"#,
        );
        assert!(missing.contains("\"amount\""), "{missing}");
        let wrong_type = error_param(br#"{"amount":"100","currency":"usd","payment_method":{"type":"card","card":{"token":"tok_visa"}}}"#);
        assert!(wrong_type.contains("\"amount\""), "{wrong_type}");
        assert!(
            !wrong_type.contains("100"),
            "the value is not echoed: {wrong_type}"
        );
    }

    #[test]
    fn a_valid_request_passes_with_currency_upper_cased() {
        let body = json!({"amount": 15000, "currency": "usd", "capture": false,
            "payment_method": {"type": "card", "card": {"token": "tok_visa"}}});
        let bytes = serde_json::to_vec(&body).expect("json");
        let payment = crate::request::parse_json(&bytes)
            .and_then(|req| validate(req, Uuid::nil()))
            .expect("valid request");
        assert_eq!(payment.currency.as_str(), "USD");
        assert_eq!(payment.amount.get(), 15000);
        assert!(!payment.capture);
    }
}
