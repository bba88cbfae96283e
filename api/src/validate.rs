//! Parsing and validating a payment request at the edge (DESIGN.md §5).
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

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use common::db::payments::NewPayment;
use common::domain::{Amount, CardToken, Currency, PaymentId};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;
use crate::wire::{Address, CreatePayment};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const MAX_ID_LEN: usize = 255;
const MAX_DESCRIPTION_LEN: usize = 1000;
const MAX_DESCRIPTOR_LEN: usize = 22;
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;

/// Reads a request body that must be JSON: `415` for another content type,
/// `413` past [`MAX_BODY_BYTES`].
pub async fn read_json_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::bad_request(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "The request body must be JSON, sent with `Content-Type: application/json`.",
        ));
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::bad_request(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("The request body must be at most {MAX_BODY_BYTES} bytes."),
            )
        })
}

/// Decodes a payment request.
pub fn parse(body: &[u8]) -> Result<CreatePayment, ApiError> {
    parse_json(body)
}

/// Decodes a JSON body, turning serde's errors into a `param` and a message.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Syntax first (including trailing garbage), so a broken document is
    // reported as such rather than as its first missing field.
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|_| {
        ApiError::bad_request(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "The request body is not valid JSON.",
        )
    })?;
    // Then repeated keys, which typed decoding would report only for struct
    // fields (and maps would silently take the last copy of).
    if let Some(param) = duplicate_key(body) {
        return Err(ApiError::invalid(
            param.clone(),
            "duplicate_parameter",
            format!("`{param}` appears more than once."),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if matches!(
            inner.classify(),
            serde_json::error::Category::Syntax
                | serde_json::error::Category::Eof
                | serde_json::error::Category::Io
        ) {
            return ApiError::bad_request(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "The request body is not valid JSON.",
            );
        }
        data_error(&path, &inner.to_string())
    })?;
    Ok(parsed)
}

/// Maps a serde data error at `path` to a 400. serde reports missing and
/// unknown fields with the name in backticks and the path of the parent.
fn data_error(path: &str, message: &str) -> ApiError {
    let parent = if path == "." { "" } else { path };
    let join = |name: &str| {
        if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    let quoted = message.split('`').nth(1).unwrap_or_default();
    if message.starts_with("unknown field") {
        // The tracked path already ends with the unknown key.
        let param = if parent.ends_with(quoted) && !quoted.is_empty() {
            parent.to_owned()
        } else {
            join(quoted)
        };
        ApiError::invalid(
            param.clone(),
            "unknown_parameter",
            format!("Unknown parameter `{param}`."),
        )
    } else if message.starts_with("duplicate field") {
        // Caught earlier by `duplicate_key`; kept so the answer stays precise
        // if that pass is ever bypassed.
        let param = join(quoted);
        ApiError::invalid(
            param.clone(),
            "duplicate_parameter",
            format!("`{param}` appears more than once."),
        )
    } else if message.starts_with("missing field") {
        let param = join(quoted);
        ApiError::invalid(
            param.clone(),
            "parameter_missing",
            format!("Missing required parameter `{param}`."),
        )
    } else {
        // A wrong type: say what was expected without echoing the value.
        let expected = message
            .split("expected ")
            .nth(1)
            .and_then(|rest| rest.split(" at line").next())
            .unwrap_or("another type");
        let param = if parent.is_empty() {
            "body".to_owned()
        } else {
            parent.to_owned()
        };
        ApiError::invalid(
            param.clone(),
            "invalid_type",
            format!("`{param}` has the wrong type: expected {expected}."),
        )
    }
}

/// The path (`a.b[0].c`, as serde_path_to_error writes it) of the first key
/// that appears twice in one JSON object of a syntactically valid document.
fn duplicate_key(body: &[u8]) -> Option<String> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let walk = KeyWalk {
        path: String::new(),
        found: &mut found,
    };
    // The only error the walk makes is the one that records `found`.
    let _ = serde::de::DeserializeSeed::deserialize(walk, &mut deserializer);
    found
}

/// Visits every value of a JSON document, remembering each object's keys.
struct KeyWalk<'a> {
    /// Where the visited value sits; empty at the root.
    path: String,
    found: &'a mut Option<String>,
}

impl KeyWalk<'_> {
    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for KeyWalk<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyWalk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let element = KeyWalk {
                path: format!("{}[{index}]", self.path),
                found: &mut *self.found,
            };
            if seq.next_element_seed(element)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = self.child(&key);
            if !seen.insert(key) {
                *self.found = Some(path);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value_seed(KeyWalk {
                path,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

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
    let amount = Amount::parse(request.amount)
        .map_err(|e| ApiError::invalid("amount", "invalid_amount", e.to_string()))?;
    let currency = Currency::parse(&request.currency)
        .map_err(|e| ApiError::invalid("currency", "invalid_currency", e.to_string()))?;
    if request.payment_method.kind != "card" {
        return Err(ApiError::invalid(
            "payment_method.type",
            "unsupported_payment_method",
            "`payment_method.type` must be `card`.",
        ));
    }
    let card_token = CardToken::parse(&request.payment_method.card.token).map_err(|e| {
        ApiError::invalid(
            "payment_method.card.token",
            "invalid_card_token",
            e.to_string(),
        )
    })?;
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
            Some(serde_json::to_value(address).map_err(|e| ApiError::internal(e.into()))?)
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
        let err = parse(body)
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
    fn duplicate_keys_are_found_at_any_depth_and_only_there() {
        assert_eq!(
            duplicate_key(br#"{"a":1,"b":{"c":[{"d":1,"d":2}]}}"#).as_deref(),
            Some("b.c[0].d")
        );
        assert_eq!(duplicate_key(br#"{"a":1,"a":1}"#).as_deref(), Some("a"));
        assert_eq!(
            duplicate_key(br#"{"a":{"x":1},"b":{"x":1},"c":[1,"x",null,true,-1.5]}"#),
            None
        );
    }

    #[test]
    fn a_valid_request_passes_with_currency_upper_cased() {
        let body = json!({"amount": 15000, "currency": "usd", "capture": false,
            "payment_method": {"type": "card", "card": {"token": "tok_visa"}}});
        let bytes = serde_json::to_vec(&body).expect("json");
        let payment = parse(&bytes)
            .and_then(|req| validate(req, Uuid::nil()))
            .expect("valid request");
        assert_eq!(payment.currency.as_str(), "USD");
        assert_eq!(payment.amount.get(), 15000);
        assert!(!payment.capture);
    }
}
