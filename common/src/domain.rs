//! Domain values that can only be built valid.
//!
//! Input is parsed once at the edge into these types; code past the edge
//! trusts them. Each constructor returns a [`DomainError`] that names what is
//! wrong, so the API can turn it into a precise `400` with a `param`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a value was rejected. The message is safe to show to API clients: it
/// never echoes the rejected value (which could be a card token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError(msg.into())
}

/// Largest amount accepted, in minor units (999,999.99 in a two-decimal
/// currency).
pub const MAX_AMOUNT: i64 = 99_999_999;

/// An amount in the currency's minor units, `1..=MAX_AMOUNT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub fn parse(value: i64) -> Result<Self, DomainError> {
        if (1..=MAX_AMOUNT).contains(&value) {
            Ok(Self(value))
        } else {
            Err(invalid(format!(
                "Amount must be a positive integer in minor units, at most {MAX_AMOUNT}."
            )))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// ISO 4217 codes of currencies a card can be charged in: the active list less
/// precious metals, fund codes used only in bookkeeping (`XDR`, `XSU`, `XUA`,
/// bond units) and the testing codes (`XTS`, `XXX`).
const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUP", "CVE",
    "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL",
    "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR",
    "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD",
    "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK",
    "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO",
    "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON",
    "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD",
    "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD",
    "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV",
    "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency code, always upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Accepts any letter case (`usd` and `USD` are the same currency).
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let upper = value.to_ascii_uppercase();
        let bytes: [u8; 3] = upper
            .as_bytes()
            .try_into()
            .map_err(|_| invalid("Currency must be a three-letter ISO 4217 code."))?;
        if CURRENCIES.binary_search(&upper.as_str()).is_ok() {
            Ok(Self(bytes))
        } else {
            Err(invalid(
                "Currency must be an ISO 4217 code of a currency that can be charged.",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        // The bytes come from a member of `CURRENCIES`: always ASCII.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Read back only where we wrote it (a row's snapshot in an event), so it
/// is as strict as [`Currency::parse`].
impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A processor card token: a vault token (`tok_…`) or a Stripe
/// PaymentMethod id (`pm_…`), both of which Stripe takes. Its `Debug` form
/// hides the value so a token can never reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct CardToken(String);

impl CardToken {
    pub const MAX_LEN: usize = 255;

    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let (prefix, rest) = ["tok_", "pm_"]
            .iter()
            .find_map(|prefix| value.strip_prefix(prefix).map(|rest| (*prefix, rest)))
            .ok_or_else(|| invalid("Card token must start with `tok_` (or `pm_`)."))?;
        if rest.is_empty() || value.len() > Self::MAX_LEN {
            return Err(invalid(format!(
                "Card token must be `{prefix}` followed by 1 to {} characters.",
                Self::MAX_LEN - prefix.len()
            )));
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid(
                "Card token may contain only letters, digits and underscores.",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// Stands for a token that was not kept: an event's snapshot of a
    /// payment leaves the token out. Never sent to a processor.
    pub fn withheld() -> Self {
        Self("tok_withheld".to_owned())
    }

    /// The secret value, for the one place that needs it: the processor call.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Rows carry the token as a `CardToken` too (`#[sqlx(try_from = "String")]`),
/// so its redacting `Debug` holds wherever a row is printed.
impl TryFrom<String> for CardToken {
    type Error = DomainError;

    fn try_from(value: String) -> Result<Self, DomainError> {
        Self::parse(&value)
    }
}

impl fmt::Debug for CardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CardToken(<redacted>)")
    }
}

/// A payment's id. Stored as a UUID; on the wire and in every CLI it is
/// `pay_<uuid>`. New ids are UUIDv7 (time-ordered), which keeps the primary
/// key index append-mostly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentId(pub Uuid);

impl PaymentId {
    pub const PREFIX: &'static str = "pay_";

    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for PaymentId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0.hyphenated())
    }
}

/// Only the form [`PaymentId`] prints parses: `pay_` and the lower-case,
/// hyphenated UUID. The `uuid` crate also reads `urn:uuid:…`, braces, 32
/// bare hex digits and upper case; accepting those would give one payment
/// many ids (in URLs, caches, logs, idempotent replays), so they name no
/// payment.
impl FromStr for PaymentId {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_public_id(s, Self::PREFIX, "Payment").map(Self)
    }
}

/// `<prefix><uuid>` in exactly the form ids are printed (lower-case,
/// hyphenated): one canonical spelling per object, so an alias is unknown.
fn parse_public_id(s: &str, prefix: &str, what: &str) -> Result<Uuid, DomainError> {
    let not_an_id = || {
        invalid(format!(
            "{what} ids look like `{prefix}` followed by a lower-case UUID."
        ))
    };
    let rest = s.strip_prefix(prefix).ok_or_else(not_an_id)?;
    let uuid = Uuid::try_parse(rest).map_err(|_| not_an_id())?;
    let mut canonical = Uuid::encode_buffer();
    if uuid.hyphenated().encode_lower(&mut canonical) == rest {
        Ok(uuid)
    } else {
        Err(not_an_id())
    }
}

/// An id shown as `<prefix><uuid>`, as strict as [`PaymentId`]: one
/// canonical spelling per object.
macro_rules! public_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", Self::PREFIX, self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = DomainError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_public_id(s, Self::PREFIX, $what).map(Self)
            }
        }
    };
}

public_id!(
    /// A refund's id: `ref_<uuid>`.
    RefundId, "ref_", "Refund"
);
public_id!(
    /// A webhook endpoint's id: `we_<uuid>`.
    EndpointId, "we_", "Webhook endpoint"
);
public_id!(
    /// An event's id: `evt_<uuid>`, also the `webhook-id` of its deliveries.
    EventId, "evt_", "Event"
);

impl Serialize for PaymentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PaymentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An operation's id (a capture's, void's or refund's): the key of
/// `operations`, and of its job's message. It has no prefix of its own:
/// where the API shows one, it is shown as its kind's id ([`RefundId`] for
/// a refund). A bare UUID on the wire and in a column, so messages and
/// event snapshots written before it read the same.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct OperationId(pub Uuid);

impl OperationId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for OperationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A refund is an operation: its public id names the same row.
impl From<RefundId> for OperationId {
    fn from(id: RefundId) -> Self {
        Self(id.0)
    }
}

/// The public id of an operation known to be a refund.
impl From<OperationId> for RefundId {
    fn from(id: OperationId) -> Self {
        Self(id.0)
    }
}

/// A client's `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        if value.is_empty() || value.len() > 255 {
            return Err(invalid("Idempotency-Key must be 1 to 255 characters."));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "Idempotency-Key may contain only visible ASCII characters.",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a payment is in its lifecycle (DESIGN.md §2). Its text (JSON,
/// database, `Display`, `FromStr`) is the snake-case name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Processing,
    Succeeded,
    Failed,
    /// Never charged (cancelled before processing), or its authorization
    /// voided.
    Cancelled,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// What a merchant's API key may do.
///
/// There is no `admin` scope: operating the platform (the dead-letter queue,
/// shared by every merchant) is the job of a different principal, an
/// operator key that belongs to no merchant (`api keys create-operator`).
/// Keeping it out of this type means no merchant key can ever carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    PaymentsRead,
    PaymentsWrite,
    WebhooksRead,
    WebhooksWrite,
}

impl Scope {
    /// Every scope a merchant key can carry.
    pub const ALL: [Scope; 4] = [
        Scope::PaymentsRead,
        Scope::PaymentsWrite,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentsRead => "payments:read",
            Self::PaymentsWrite => "payments:write",
            Self::WebhooksRead => "webhooks:read",
            Self::WebhooksWrite => "webhooks:write",
        }
    }
}

/// What an operator key stores as its scopes, so `api keys list` and old
/// readers of the table still see what it is for.
pub const OPERATOR_SCOPE: &str = "admin";

impl FromStr for Scope {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == OPERATOR_SCOPE {
            return Err(invalid(
                "`admin` is not a merchant scope: operators have keys of their own, \
                 bound to no merchant; make one with `api keys create-operator --name N`",
            ));
        }
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                invalid(format!(
                    "unknown scope {s:?}; merchant scopes are payments:read, payments:write, \
                     webhooks:read, webhooks:write"
                ))
            })
    }
}

/// Why a payment failed without a decline: it was never processed. Distinct
/// from every processor decline code, so a client can tell "the card was
/// refused" from "we could not reach the processor" and retry the latter.
pub mod failure_codes {
    /// The processor stayed unreachable through every attempt.
    pub const PROCESSOR_UNAVAILABLE: &str = "processor_unavailable";
    /// The job could not be processed at all (poison message).
    pub const NOT_PROCESSED: &str = "not_processed";

    /// Codes of payments that were dead-lettered and may be replayed.
    pub const REPLAYABLE: [&str; 2] = [PROCESSOR_UNAVAILABLE, NOT_PROCESSED];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_accepts_the_documented_range_only() {
        assert!(Amount::parse(1).is_ok());
        assert!(Amount::parse(MAX_AMOUNT).is_ok());
        assert!(Amount::parse(0).is_err());
        assert!(Amount::parse(-5).is_err());
        assert!(Amount::parse(MAX_AMOUNT + 1).is_err());
    }

    #[test]
    fn currency_is_case_insensitive_in_and_upper_case_out() {
        assert_eq!(
            Currency::parse("usd").map(|c| c.to_string()),
            Ok("USD".into())
        );
        assert_eq!(
            Currency::parse("EuR").map(|c| c.to_string()),
            Ok("EUR".into())
        );
        assert!(Currency::parse("US").is_err());
        assert!(Currency::parse("USDX").is_err());
        assert!(Currency::parse("ABC").is_err());
        assert!(
            Currency::parse("XAU").is_err(),
            "gold is not a card currency"
        );
        assert!(Currency::parse("ÜSD").is_err());
    }

    #[test]
    fn currency_table_is_sorted_for_binary_search() {
        assert!(CURRENCIES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn card_token_must_start_with_tok_and_is_redacted_in_debug() {
        let token = CardToken::parse("tok_visa").expect("valid token");
        assert_eq!(token.expose(), "tok_visa");
        assert!(!format!("{token:?}").contains("visa"));
        assert!(CardToken::parse("visa").is_err());
        assert!(CardToken::parse("tok_").is_err());
        assert!(CardToken::parse("tok_a b").is_err());
        assert!(CardToken::parse(&format!("tok_{}", "a".repeat(252))).is_err());
        assert!(CardToken::parse(&format!("tok_{}", "a".repeat(251))).is_ok());
        assert!(CardToken::parse("pm_1PqR2s").is_ok());
        assert!(CardToken::parse("pm_").is_err());
    }

    #[test]
    fn payment_id_round_trips_through_its_public_form() {
        let id = PaymentId::new();
        let text = id.to_string();
        assert!(text.starts_with("pay_"));
        assert_eq!(text.parse::<PaymentId>(), Ok(id));
        assert!("0901f083-aa1c-43c5-af5c-0a9d2fc64e30"
            .parse::<PaymentId>()
            .is_err());
        assert!("pay_nope".parse::<PaymentId>().is_err());
    }

    #[test]
    fn payment_id_aliases_of_the_same_uuid_do_not_parse() {
        let id = PaymentId::new();
        let uuid = id.0;
        for alias in [
            format!("pay_urn:uuid:{}", uuid.hyphenated()),
            format!("pay_{}", uuid.simple()),
            format!("pay_{}", uuid.braced()),
            format!("pay_{}", uuid.hyphenated().to_string().to_uppercase()),
            format!("PAY_{}", uuid.hyphenated()),
        ] {
            assert!(alias.parse::<PaymentId>().is_err(), "{alias}");
        }
        assert_eq!(id.to_string().parse::<PaymentId>(), Ok(id));
    }

    #[test]
    fn idempotency_key_bounds() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
    }

    #[test]
    fn scopes_parse_from_their_names() {
        assert_eq!("payments:read".parse(), Ok(Scope::PaymentsRead));
        assert!("payments:delete".parse::<Scope>().is_err());
    }

    #[test]
    fn admin_is_no_merchant_scope_and_the_error_names_the_operator_command() {
        let err = "admin".parse::<Scope>().expect_err("not a merchant scope");
        assert!(err.0.contains("api keys create-operator"), "{err}");
        assert!(Scope::ALL.iter().all(|s| s.as_str() != OPERATOR_SCOPE));
    }
}

/// What an operation does at the processor.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    Capture,
    Void,
    Refund,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where an operation is: a payment's statuses less `cancelled` (an
/// operation that cannot be done fails).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, strum::EnumString, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum OperationStatus {
    Pending,
    Processing,
    Succeeded,
    Failed,
}

impl OperationStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
