//! What a receipt shows: the payment and the name of the merchant it is for.

use sqlx::PgConnection;

use crate::db::operations::{self, OperationRow};
use crate::db::payments::{self, PaymentRow};
use crate::domain::Kind;
use crate::domain::PaymentId;

/// A payment with its merchant's name and its refunds.
#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub payment: PaymentRow,
    pub merchant_name: String,
    /// Newest first, at most [`MAX_REFUNDS`].
    pub refunds: Vec<OperationRow>,
}

/// Refunds a receipt lists, newest first (a payment has few).
pub const MAX_REFUNDS: i64 = 100;

/// The payment, its merchant's name and its refunds, whoever the merchant
/// is: a receipt URL is its own authority (see the API's `receipts`
/// module). Reads on one connection: `payment_row!` selects a payment's
/// columns into [`PaymentRow`] exactly, so a join could not add the name to
/// it. Receipts are off the hot path.
pub async fn find(conn: &mut PgConnection, id: PaymentId) -> sqlx::Result<Option<ReceiptRow>> {
    let Some(payment) = payments::find(&mut *conn, id).await? else {
        return Ok(None);
    };
    let merchant_name = sqlx::query_scalar!(
        "SELECT name FROM merchants WHERE id = $1",
        payment.merchant_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let refunds = if payment.amount_captured == 0 {
        Vec::new()
    } else {
        operations::list_for_payment(
            &mut *conn,
            PaymentId(payment.id),
            Kind::Refund,
            None,
            MAX_REFUNDS,
        )
        .await?
    };
    Ok(Some(ReceiptRow {
        payment,
        merchant_name,
        refunds,
    }))
}
