//! What a receipt shows: the payment and the name of the merchant it is for.

use sqlx::PgExecutor;

use crate::db::payments::PaymentRow;
use crate::domain::PaymentId;

/// A payment with its merchant's name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReceiptRow {
    #[sqlx(flatten)]
    pub payment: PaymentRow,
    pub merchant_name: String,
}

/// The payment and its merchant's name, whoever the merchant is: a receipt
/// URL is its own authority (see the API's `receipts` module).
pub async fn find<'e>(db: impl PgExecutor<'e>, id: PaymentId) -> sqlx::Result<Option<ReceiptRow>> {
    sqlx::query_as(
        "SELECT p.*, m.name AS merchant_name
         FROM payments p JOIN merchants m ON m.id = p.merchant_id
         WHERE p.id = $1",
    )
    .bind(id.0)
    .fetch_optional(db)
    .await
}
