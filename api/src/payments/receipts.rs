//! `GET /receipts/:id`: a payment's receipt, an HTML page for its customer.
//!
//! No API key: the URL is the capability, as with card networks' and
//! Stripe's receipt links, because the customer who opens it has no key.
//! Whoever holds a payment's `receipt_url` can read that one receipt, so the
//! page shows only what a paper receipt would: the merchant's name, the
//! amount, the card's brand and last four digits, status, date, receipt
//! number, description and refunds. Never the card token, the card's
//! fingerprint or expiry, the customer's e-mail, name or address, metadata or
//! anything of the processor's.
//!
//! How hard the URL is to guess: the id is a UUIDv7, a 48-bit millisecond
//! timestamp and 74 bits that are not (a 42-bit counter seeded at random
//! every millisecond, then 32 random bits). Someone who knows when a payment
//! was made still faces about 2^73 candidates; someone holding a receipt of
//! their own made in the same millisecond by the same API process faces only
//! the 32 random bits (the counter just counts). A receipt says little (no
//! card number, no customer), so this is accepted for now; a random receipt
//! token of its own, stored with the payment, would remove the doubt. The
//! README says the same.
//!
//! Every value on the page goes through `maud`, which escapes it for HTML
//! (merchant names and descriptions are set by merchants and may hold
//! markup). The page loads nothing and runs nothing: its
//! `Content-Security-Policy` allows its one inline style sheet, by hash, and
//! nothing else. An id that is malformed or names no payment is a `404` in
//! the API's JSON envelope, like every other error of this service.

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use common::db;
use common::db::operations::OperationRow;
use common::db::payments::PaymentRow;
use common::db::receipts::ReceiptRow;
use common::domain::OperationStatus;
use common::domain::{PaymentId, PaymentStatus};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sha2::{Digest as _, Sha256};

use crate::http::error::{ApiError, ErrorEnvelope};
use crate::payments::wire::{receipt_number, CardOut};
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(receipt))
}

/// The page's only style sheet, inline so the page needs no other request.
const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f5;color:#18181b}\
main{max-width:28rem;margin:2rem auto;background:#fff;padding:2rem;border-radius:8px}\
.merchant{font-size:1.1rem;font-weight:600;margin:0}\
h1{font-size:1rem;font-weight:400;color:#52525b;margin:.25rem 0 1.5rem}\
.amount{font-size:2rem;font-weight:600;margin:0 0 1.5rem}\
table{width:100%;border-collapse:collapse}\
th,td{text-align:left;padding:.5rem 0;border-top:1px solid #e4e4e7;vertical-align:top}\
th{font-weight:400;color:#52525b;width:45%}";

/// Nothing but the inline style sheet, named by its hash: no script, no
/// image, no frame, no form, no base, and no framing of the page elsewhere.
static CONTENT_SECURITY_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
    HeaderValue::try_from(format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    ))
    // Base64 and ASCII only: always a valid header value.
    .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// A payment's receipt page (the payment's `receipt_url`).
#[utoipa::path(
    get,
    path = "/receipts/{id}",
    tag = "receipts",
    operation_id = "get_receipt",
    summary = "A payment's receipt, as an HTML page",
    description = "No key: the URL is the capability. Shows only what a paper receipt would.",
    params(
        ("id" = String, Path, description = "The payment's id, `pay_…`.", example = "pay_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a")
    ),
    responses(
        (status = 200, description = "The receipt page.", body = String, content_type = "text/html"),
        (status = 404, description = "No such payment.", body = ErrorEnvelope)
    ),
    security(())
)]
async fn receipt(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // A malformed id names no payment: 404 like any unknown id.
    let id: PaymentId = id.parse().map_err(|_| no_such_receipt())?;
    tracing::Span::current().record("payment_id", tracing::field::display(id));
    let row = db::receipts::find(&mut *state.pool.acquire().await?, id)
        .await?
        .ok_or_else(no_such_receipt)?;
    let mut response = render(&row).into_string().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY.clone(),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The URL is the capability: never send it on as a Referer, never keep
    // it in a shared cache (the page changes with refunds), never index it.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    Ok(response)
}

fn no_such_receipt() -> ApiError {
    ApiError::not_found("No such receipt.")
}

fn render(row: &ReceiptRow) -> Markup {
    let payment = &row.payment;
    // What the card was charged, once captured (a partial capture took
    // less than was authorized); else what was asked for.
    let headline = if payment.captured {
        payment.amount_captured
    } else {
        payment.amount
    };
    let amount = format_amount(headline, payment.currency.as_str());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex, nofollow";
                title { "Receipt from " (row.merchant_name) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    p.merchant { (row.merchant_name) }
                    h1 { "Receipt" }
                    p.amount { (amount) }
                    table {
                        tr { th { "Receipt number" } td { (receipt_number(payment.receipt_number)) } }
                        tr { th { "Date" } td { (date(payment.created_at)) } }
                        tr { th { "Status" } td { (status_label(payment)) } }
                        tr { th { "Payment method" } td { (card_line(payment)) } }
                        @if let Some(description) = &payment.description {
                            tr { th { "Description" } td { (description) } }
                        }
                        @if payment.captured && payment.amount_captured != payment.amount {
                            tr { th { "Authorized" } td { (format_amount(payment.amount, payment.currency.as_str())) } }
                        }
                        (refund_lines(row))
                    }
                }
            }
        }
    }
}

/// The rows about refunds: each refund by its status (a pending one, or
/// one whose outcome is being confirmed, is pending, not refunded; a failed
/// one is not listed: no money moved), then the net of what is settled: the
/// capture less the refunds that succeeded.
fn refund_lines(row: &ReceiptRow) -> Markup {
    let payment = &row.payment;
    let listed: Vec<&OperationRow> = row
        .refunds
        .iter()
        .filter(|r| r.status != OperationStatus::Failed)
        .collect();
    if listed.is_empty() {
        return html! {};
    }
    let currency = payment.currency.as_str();
    let settled: i64 = listed
        .iter()
        .filter(|r| r.status == OperationStatus::Succeeded)
        .map(|r| r.amount)
        .sum();
    let pending = listed
        .iter()
        .any(|r| r.status != OperationStatus::Succeeded);
    html! {
        @for refund in &listed {
            tr {
                th { @if refund.status == OperationStatus::Succeeded { "Refunded" } @else { "Refund pending" } }
                td { (format_amount(refund.amount, currency)) " on " (date(refund.finished_at.unwrap_or(refund.created_at))) }
            }
        }
        tr {
            th { @if pending { "Net (refunds pending not deducted)" } @else { "Net" } }
            td { (format_amount(payment.amount_captured - settled, currency)) }
        }
    }
}

/// `19 January 2024, 15:30 UTC`: receipts are read by people, anywhere, so
/// the time zone is said.
fn date(at: DateTime<Utc>) -> String {
    at.format("%-d %B %Y, %H:%M UTC").to_string()
}

/// What the customer needs to know of the status: whether they paid.
fn status_label(payment: &PaymentRow) -> &'static str {
    match payment.status {
        PaymentStatus::Succeeded if payment.captured => "Paid",
        PaymentStatus::Succeeded => "Authorized, not yet charged",
        PaymentStatus::Pending | PaymentStatus::Processing => "Processing",
        PaymentStatus::Failed => "Failed: not charged",
        PaymentStatus::Cancelled => "Cancelled: not charged",
    }
}

/// `Visa •••• 4242`; only the brand and the last four digits, as printed on a
/// paper receipt.
fn card_line(payment: &PaymentRow) -> String {
    let card = payment
        .card
        .as_ref()
        .map(|c| CardOut::from(&c.0))
        .unwrap_or_default();
    let brand = card.brand.as_deref().map_or("Card", brand_name);
    match card.last4 {
        Some(last4) => format!("{brand} •••• {last4}"),
        None => brand.to_owned(),
    }
}

fn brand_name(brand: &str) -> &str {
    match brand {
        "visa" => "Visa",
        "mastercard" => "Mastercard",
        "amex" => "American Express",
        "discover" => "Discover",
        "diners" => "Diners Club",
        "jcb" => "JCB",
        "unionpay" => "UnionPay",
        other => other,
    }
}

/// Digits after the decimal point of a currency (ISO 4217's minor unit):
/// JPY 0, USD 2, KWD 3. From the `iso_currency` crate; a code it does not
/// know (ANG, withdrawn in 2025 but still accepted until merchants have
/// moved) has 2, the minor unit of every such code.
pub fn minor_unit_digits(currency: &str) -> u32 {
    iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .map_or(2, u32::from)
}

/// An amount in minor units as people write it, in major units with the
/// currency's own decimals and thousands separated: `1,234.56 USD`,
/// `15,000 JPY`, `1.500 KWD`.
pub fn format_amount(minor: i64, currency: &str) -> String {
    let digits = minor_unit_digits(currency);
    let scale = 10u64.pow(digits);
    let magnitude = minor.unsigned_abs();
    let (major, fraction) = (magnitude / scale, magnitude % scale);
    let mut out = String::new();
    if minor < 0 {
        out.push('-');
    }
    let major = major.to_string();
    for (i, digit) in major.chars().enumerate() {
        if i > 0 && (major.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if digits > 0 {
        out.push_str(&format!(".{fraction:0width$}", width = digits as usize));
    }
    out.push(' ');
    out.push_str(currency);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_follow_iso_4217() {
        for (code, digits) in [
            ("JPY", 0),
            ("KRW", 0),
            ("USD", 2),
            ("EUR", 2),
            ("KWD", 3),
            ("BHD", 3),
            ("CLF", 4),
            ("ANG", 2),
        ] {
            assert_eq!(minor_unit_digits(code), digits, "{code}");
        }
    }

    #[test]
    fn amounts_are_major_units_with_the_currencys_decimals() {
        assert_eq!(format_amount(15000, "USD"), "150.00 USD");
        assert_eq!(format_amount(5, "USD"), "0.05 USD");
        assert_eq!(format_amount(123_456_789, "USD"), "1,234,567.89 USD");
        assert_eq!(format_amount(15000, "JPY"), "15,000 JPY");
        assert_eq!(format_amount(999, "JPY"), "999 JPY");
        assert_eq!(format_amount(1500, "KWD"), "1.500 KWD");
        assert_eq!(format_amount(99_999_999, "BHD"), "99,999.999 BHD");
        assert_eq!(format_amount(-250, "EUR"), "-2.50 EUR");
    }

    #[test]
    fn dates_say_their_time_zone() {
        let at = DateTime::from_timestamp(1_705_678_200, 0).expect("valid");
        assert_eq!(date(at), "19 January 2024, 15:30 UTC");
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style() {
        let policy = CONTENT_SECURITY_POLICY.to_str().expect("ascii").to_owned();
        assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    }
}
