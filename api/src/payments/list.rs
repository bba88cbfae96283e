//! `GET /v1/payments`: the caller's payments, newest first, a page at a time.
//!
//! `{"object": "list", "url": "/v1/payments", "has_more", "data": [payment…]}`,
//! each item exactly what `GET /v1/payments/:id` returns. Pages are cursors,
//! never offsets (`common::db::payment_list`): `starting_after=pay_…` gives the
//! payments just older than that one, `ending_before=pay_…` the ones just
//! newer (still newest first), and payments that arrive meanwhile never shift
//! or repeat what a client pages through.
//!
//! Every parameter is checked before the database is asked: a value that does
//! not fit, an unknown parameter or one given twice is a `400` naming it. A
//! cursor that is not one of the caller's payments is a `400` naming the
//! cursor parameter (code `resource_missing`), not a `404`: the list exists,
//! the parameter is wrong; another merchant's payment id gets the same answer
//! as an id that exists nowhere.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use common::db::operations;
use common::db::payment_list::{self, Filter, Page, Position};
use common::domain::{Currency, PaymentId, PaymentStatus, Scope};
use serde::Deserialize;
use uuid::Uuid;

use crate::http::auth::Caller;
use crate::http::error::{ApiError, DomainResultExt as _};
use crate::http::extract::Query;
use crate::http::page::{no_such_cursor, Cursor, Limit, List, PageSize};
use crate::payments::wire::Payment;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The list's own path, as its `url` field shows it.
pub const URL: &str = "/v1/payments";
/// Latest Unix time accepted in a `created[...]` bound: 9999-12-31T23:59:59Z.
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;
/// Longest id accepted in a filter: the longest a payment can store.
const MAX_ID_LEN: usize = 255;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list))
}

/// The query string, as sent. Unknown parameters are rejected, so a misspelt
/// filter is an error instead of a silently unfiltered list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Payments on the page, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A payment id (`pay_…`) of yours: the page holds the payments just
    /// older than it. Not with `ending_before`.
    pub starting_after: Option<String>,
    /// A payment id (`pay_…`) of yours: the page holds the payments just
    /// newer than it (still newest first). Not with `starting_after`.
    pub ending_before: Option<String>,
    /// Only payments in this status.
    #[param(schema_with = crate::payments::wire::payment_status)]
    pub status: Option<String>,
    #[param(min_length = 1, max_length = 255)]
    pub customer_id: Option<String>,
    #[param(min_length = 1, max_length = 255)]
    pub order_id: Option<String>,
    #[param(min_length = 1, max_length = 255)]
    pub invoice_id: Option<String>,
    /// ISO 4217 code, any case.
    #[param(pattern = "^[A-Za-z]{3}$")]
    pub currency: Option<String>,
    /// Created after this Unix time (seconds).
    #[serde(rename = "created[gt]")]
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    pub created_gt: Option<i64>,
    /// Created at or after this Unix time (seconds).
    #[serde(rename = "created[gte]")]
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    pub created_gte: Option<i64>,
    /// Created before this Unix time (seconds).
    #[serde(rename = "created[lt]")]
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    pub created_lt: Option<i64>,
    /// Created at or before this Unix time (seconds).
    #[serde(rename = "created[lte]")]
    #[param(minimum = 0, maximum = 253_402_300_799_i64)]
    pub created_lte: Option<i64>,
    /// Amount at least this, in minor units.
    #[serde(rename = "amount[gte]")]
    #[param(minimum = 0)]
    pub amount_gte: Option<i64>,
    /// Amount at most this, in minor units.
    #[serde(rename = "amount[lte]")]
    #[param(minimum = 0)]
    pub amount_lte: Option<i64>,
}

/// A list request, every parameter checked.
#[derive(Debug, PartialEq, Eq)]
struct ListRequest {
    limit: Limit,
    cursor: Option<Cursor<PaymentId>>,
    filter: Filter,
}

/// The caller's payments, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/payments",
    tag = "payments",
    operation_id = "list_payments",
    summary = "List payments",
    description = "The caller's merchant's payments, newest first, with cursor pagination and \
filters. Each item is what `GET /v1/payments/{id}` returns. An unknown parameter, one given \
twice, or a value that does not fit is `400` naming it; a cursor that is not one of your \
payments is `400` (`resource_missing`).",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of payments.", body = List<Payment>)
    ),
    security(("bearer" = ["payments:read"]))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<List<Payment>>, ApiError> {
    caller.require(Scope::PaymentsRead)?;
    let request = ListRequest::parse(query)?;
    let page = match request.cursor {
        None => Page::First,
        Some(cursor) => match cursor.at(cursor_position(&state, caller.merchant_id, cursor).await?)
        {
            Cursor::StartingAfter(at) => Page::After(at),
            Cursor::EndingBefore(at) => Page::Before(at),
        },
    };
    let listed = payment_list::list(
        &state.pool,
        caller.merchant_id,
        &request.filter,
        page,
        request.limit.shown(),
    )
    .await?;
    let base = &state.settings.public_base_url;
    // Each item shows its latest refunds, as `GET` does: one query for the
    // page.
    let ids: Vec<Uuid> = listed.rows.iter().map(|row| row.id).collect();
    let refunds = operations::latest_refunds(
        &state.pool,
        &ids,
        crate::payments::wire::Refunds::EMBEDDED as i64 + 1,
    )
    .await?;
    let data = listed
        .rows
        .iter()
        .map(|row| {
            let own: Vec<_> = refunds
                .iter()
                .filter(|r| r.payment_id == row.id)
                .cloned()
                .collect();
            Payment::from_row(row, base).with_refunds(&own, false)
        })
        .collect();
    Ok(Json(List::cut(URL, data, listed.has_more)))
}

/// Where the cursor payment sits in the caller's list; a `400` naming the
/// cursor parameter when it is not one of the caller's payments.
async fn cursor_position(
    state: &AppState,
    merchant_id: Uuid,
    cursor: Cursor<PaymentId>,
) -> Result<Position, ApiError> {
    payment_list::position(&state.pool, merchant_id, *cursor.id())
        .await?
        .ok_or_else(|| no_such_cursor(cursor.param(), "payments"))
}

impl ListRequest {
    fn parse(query: ListQuery) -> Result<Self, ApiError> {
        let limit = PageSize::MERCHANT.limit(query.limit)?;
        let cursor = Cursor::parse(
            query.starting_after.as_deref(),
            query.ending_before.as_deref(),
        )?;
        let status = query
            .status
            .map(|s| {
                s.parse::<PaymentStatus>().map_err(|_| {
                    ApiError::invalid(
                        "status",
                        "invalid_parameter",
                        "`status` must be a payment status, such as `succeeded` or `failed`.",
                    )
                })
            })
            .transpose()?;
        let currency = query
            .currency
            .map(|c| Currency::parse(&c).invalid("currency", "invalid_parameter"))
            .transpose()?;
        let filter = Filter {
            status,
            customer_id: filter_id("customer_id", query.customer_id)?,
            order_id: filter_id("order_id", query.order_id)?,
            invoice_id: filter_id("invoice_id", query.invoice_id)?,
            currency,
            created_from: latest([
                unix_bound("created[gte]", query.created_gte, 0)?,
                // Times are shown in whole seconds: "after second T" starts
                // at T + 1, and "up to second T" ends before T + 1.
                unix_bound("created[gt]", query.created_gt, 1)?,
            ]),
            created_until: earliest([
                unix_bound("created[lt]", query.created_lt, 0)?,
                unix_bound("created[lte]", query.created_lte, 1)?,
            ]),
            amount_min: amount_bound("amount[gte]", query.amount_gte)?,
            amount_max: amount_bound("amount[lte]", query.amount_lte)?,
        };
        Ok(Self {
            limit,
            cursor,
            filter,
        })
    }
}

/// A customer, order or invoice id: as long as a payment may store, and no
/// control characters (no payment has one, and PostgreSQL refuses NUL).
fn filter_id(param: &'static str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let len = value.chars().count();
    if !(1..=MAX_ID_LEN).contains(&len) || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            param,
            "invalid_parameter",
            format!(
                "`{param}` must be 1 to {MAX_ID_LEN} characters, none of them control characters."
            ),
        ));
    }
    Ok(Some(value))
}

/// `seconds` (Unix time) plus `shift` seconds, as a time.
fn unix_bound(
    param: &'static str,
    seconds: Option<i64>,
    shift: i64,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(seconds) = seconds else {
        return Ok(None);
    };
    if !(0..=MAX_UNIX_SECONDS).contains(&seconds) {
        return Err(ApiError::invalid(
            param,
            "invalid_parameter",
            format!("`{param}` must be a Unix time in seconds, from 0 to {MAX_UNIX_SECONDS}."),
        ));
    }
    // In range by the check above, so the conversion cannot fail.
    Ok(DateTime::from_timestamp(seconds + shift, 0))
}

fn amount_bound(param: &'static str, amount: Option<i64>) -> Result<Option<i64>, ApiError> {
    match amount {
        Some(amount) if amount < 0 => Err(ApiError::invalid(
            param,
            "invalid_parameter",
            format!("`{param}` must be an amount in minor units, 0 or more."),
        )),
        amount => Ok(amount),
    }
}

fn latest<const N: usize>(times: [Option<DateTime<Utc>>; N]) -> Option<DateTime<Utc>> {
    times.into_iter().flatten().max()
}

fn earliest<const N: usize>(times: [Option<DateTime<Utc>>; N]) -> Option<DateTime<Utc>> {
    times.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::parse_query;

    fn parse(query: &str) -> Result<ListRequest, ApiError> {
        ListRequest::parse(parse_query(query)?)
    }

    /// The status and `param` of a rejected query, read from the envelope a
    /// client would get.
    fn rejected(query: &str) -> (u16, Option<String>) {
        use axum::response::IntoResponse as _;
        let response = parse(query).expect_err(query).into_response();
        let status = response.status().as_u16();
        let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
            response.into_body(),
            usize::MAX,
        ))
        .expect("a buffered body is ready at once")
        .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON envelope");
        let param = body["error"]["param"].as_str().map(str::to_owned);
        (status, param)
    }

    fn at(seconds: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(seconds, 0)
    }

    #[test]
    fn defaults_are_ten_newest_unfiltered() {
        let request = parse("").expect("valid");
        assert_eq!(request.limit.shown(), 10);
        assert_eq!(request.cursor, None);
        assert_eq!(request.filter, Filter::default());
    }

    #[test]
    fn limit_is_one_to_a_hundred() {
        assert_eq!(parse("limit=1").expect("valid").limit.shown(), 1);
        assert_eq!(parse("limit=100").expect("valid").limit.shown(), 100);
        for bad in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=ten",
            "limit=",
            "limit=1.5",
        ] {
            assert_eq!(rejected(bad), (400, Some("limit".into())), "{bad}");
        }
    }

    #[test]
    fn cursors_are_payment_ids_and_only_one_of_them() {
        let id = PaymentId::new();
        let request = parse(&format!("starting_after={id}")).expect("valid");
        assert_eq!(request.cursor, Some(Cursor::StartingAfter(id)));
        let request = parse(&format!("ending_before={id}")).expect("valid");
        assert_eq!(request.cursor, Some(Cursor::EndingBefore(id)));
        assert_eq!(
            rejected(&format!("starting_after={id}&ending_before={id}")),
            (400, Some("ending_before".into()))
        );
        assert_eq!(
            rejected("starting_after=pay_nope"),
            (400, Some("starting_after".into()))
        );
        assert_eq!(
            rejected(&format!("ending_before={}", id.0)),
            (400, Some("ending_before".into()))
        );
    }

    #[test]
    fn created_bounds_are_whole_seconds_and_the_strictest_wins() {
        let request = parse("created[gt]=100&created[gte]=50&created[lt]=200&created[lte]=300")
            .expect("valid");
        assert_eq!(request.filter.created_from, at(101));
        assert_eq!(request.filter.created_until, at(200));
        let request = parse("created%5Bgte%5D=100&created%5Blte%5D=150").expect("encoded brackets");
        assert_eq!(request.filter.created_from, at(100));
        assert_eq!(request.filter.created_until, at(151));
        for (bad, param) in [
            ("created[gt]=soon", "created[gt]"),
            ("created[gte]=-1", "created[gte]"),
            ("created[lt]=253402300800", "created[lt]"),
            ("created[lte]=1e9", "created[lte]"),
            ("created=5", "created"),
            ("created[eq]=5", "created[eq]"),
        ] {
            assert_eq!(rejected(bad), (400, Some(param.into())), "{bad}");
        }
    }

    #[test]
    fn filters_are_parsed_into_domain_values() {
        let request = parse(
            "status=failed&currency=jpy&customer_id=cust_1&order_id=o%201&invoice_id=inv_1\
             &amount[gte]=0&amount[lte]=500",
        )
        .expect("valid");
        let filter = request.filter;
        assert_eq!(filter.status, Some(PaymentStatus::Failed));
        assert_eq!(filter.currency.map(|c| c.to_string()), Some("JPY".into()));
        assert_eq!(filter.customer_id.as_deref(), Some("cust_1"));
        assert_eq!(filter.order_id.as_deref(), Some("o 1"));
        assert_eq!(filter.invoice_id.as_deref(), Some("inv_1"));
        assert_eq!((filter.amount_min, filter.amount_max), (Some(0), Some(500)));
    }

    #[test]
    fn bad_filters_name_their_param() {
        let long = "x".repeat(256);
        for (bad, param) in [
            ("status=paid".to_owned(), "status"),
            ("status=".to_owned(), "status"),
            ("currency=usdx".to_owned(), "currency"),
            ("currency=XAU".to_owned(), "currency"),
            ("customer_id=".to_owned(), "customer_id"),
            (format!("order_id={long}"), "order_id"),
            ("invoice_id=a%00b".to_owned(), "invoice_id"),
            ("amount[gte]=-5".to_owned(), "amount[gte]"),
            ("amount[lte]=lots".to_owned(), "amount[lte]"),
            ("limit=5&limit=6".to_owned(), "limit"),
            ("expand[]=customer".to_owned(), "expand[]"),
        ] {
            assert_eq!(rejected(&bad), (400, Some(param.into())), "{bad}");
        }
    }
}
