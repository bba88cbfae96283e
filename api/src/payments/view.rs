//! A payment as `GET` shows it, and `expand[]`.

use common::db::operations;
use common::db::payments::PaymentRow;
use common::domain::{Kind, PaymentId};

use crate::http::error::ApiError;
use crate::payments::wire::Payment;
use crate::state::AppState;

/// The payment as `GET` shows it: with its latest refunds, or all of them.
/// `db` is the caller's: a handler inside a transaction reads through it,
/// never through a second pool connection (a request that holds a row lock
/// and waits for another connection can starve the pool).
pub(crate) async fn view<'e>(
    db: impl sqlx::PgExecutor<'e>,
    state: &AppState,
    row: &PaymentRow,
    expand: &Expand,
) -> Result<Payment, ApiError> {
    // Only a captured payment can have refunds (even failed ones): skip the
    // query for every other read.
    let limit = if row.amount_captured == 0 {
        0
    } else if expand.refunds {
        i64::MAX
    } else {
        crate::payments::wire::Refunds::EMBEDDED as i64 + 1
    };
    let refunds = if limit == 0 {
        Vec::new()
    } else {
        operations::list_for_payment(db, PaymentId(row.id), Kind::Refund, None, limit).await?
    };
    let mut payment = Payment::from_row(row, &state.settings.public_base_url)
        .with_refunds(&refunds, expand.refunds);
    if expand.customer && payment.customer.is_none() && row.customer_id.is_some() {
        payment.customer = Some(crate::payments::wire::CustomerOut {
            id: row.customer_id.clone(),
            email: None,
            name: None,
        });
    }
    Ok(payment)
}

/// What `expand[]` may name on a payment read: the documented type, and
/// the one each value is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema, strum::EnumString)]
#[schema(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Expansion {
    /// Every refund instead of the latest 10.
    Refunds,
    /// The customer object, from `customer_id` when nothing else is known.
    Customer,
}

/// `expand[]=…` on a payment read.
#[derive(Debug, Default)]
pub(crate) struct Expand {
    refunds: bool,
    customer: bool,
}

impl Expand {
    /// Reads `expand[]` (or `expand`) from a query string; any other
    /// parameter, or an expansion this system has no object for, is `400`
    /// naming it.
    pub(crate) fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let mut expand = Self::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if name != "expand[]" && name != "expand" {
                return Err(ApiError::invalid(
                    name.to_string(),
                    "unknown_parameter",
                    "This parameter is not known here.",
                ));
            }
            match value.parse::<Expansion>() {
                Ok(Expansion::Refunds) => expand.refunds = true,
                Ok(Expansion::Customer) => expand.customer = true,
                Err(_) => {
                    return Err(ApiError::invalid(
                        "expand[]",
                        "invalid_expand",
                        "`expand[]` may be `refunds` or `customer`.",
                    ))
                }
            }
        }
        Ok(expand)
    }
}

/// `expand[]=…` on a payment read, as the OpenAPI document shows it (read
/// by hand by [`Expand::from_query`], so never built).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ExpandQuery {
    /// Objects to expand: `refunds`, `customer`. Any other value, or any
    /// other query parameter, is `400` naming it.
    #[param(rename = "expand[]", explode, style = Form, required = false)]
    expand: Option<Vec<Expansion>>,
}
