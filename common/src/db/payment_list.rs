//! A merchant's payments, newest first, a page at a time (`GET /v1/payments`).
//!
//! Keyset pagination on `(created_at, id)`: a page is "the `limit` payments
//! just older (or just newer) than this one", never an OFFSET, so a page costs
//! the same at any depth and payments arriving meanwhile neither shift nor
//! repeat what a client pages through. Every query is one range scan of an
//! index that leads with `merchant_id` and ends with `created_at DESC, id
//! DESC` (migration `payment_list`).
//!
//! The SQL is built from the filters present, each value a bind parameter:
//! one statement text per combination of filters, so each is prepared and
//! planned for the indexes it can use. (The alternative, one text with
//! `($n IS NULL OR col = $n)` for every filter, is planned once for all
//! combinations, and a generic plan of it cannot use the filters' indexes.)

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::db::payments::PaymentRow;
use crate::domain::{Currency, PaymentId, PaymentStatus};

/// Most payments one page may hold.
pub const MAX_LIMIT: i64 = 100;

/// Where a payment sits in the list: the sort key of the keyset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Position {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// Which page: the newest, or the one next to a cursor payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest payments.
    First,
    /// Payments older than this one (`starting_after`).
    After(Position),
    /// Payments newer than this one (`ending_before`), the nearest ones.
    Before(Position),
}

/// What to list. Every bound is optional; a payment matches when it meets all
/// that are given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<PaymentStatus>,
    pub customer_id: Option<String>,
    pub order_id: Option<String>,
    pub invoice_id: Option<String>,
    pub currency: Option<Currency>,
    /// `created_at >= this`.
    pub created_from: Option<DateTime<Utc>>,
    /// `created_at < this`.
    pub created_until: Option<DateTime<Utc>>,
    /// `amount >= this`, in minor units.
    pub amount_min: Option<i64>,
    /// `amount <= this`, in minor units.
    pub amount_max: Option<i64>,
}

/// One page, newest first whatever the direction it was read in.
#[derive(Debug)]
pub struct Listed {
    pub rows: Vec<PaymentRow>,
    /// More payments lie beyond this page in the direction of paging: older
    /// ones for [`Page::First`] and [`Page::After`], newer ones for
    /// [`Page::Before`].
    pub has_more: bool,
}

/// The list position of a cursor payment, if it is this merchant's.
pub async fn position<'e>(
    db: impl PgExecutor<'e>,
    merchant_id: Uuid,
    id: PaymentId,
) -> sqlx::Result<Option<Position>> {
    sqlx::query_as!(
        Position,
        "SELECT created_at, id FROM payments WHERE id = $1 AND merchant_id = $2",
        id.0,
        merchant_id,
    )
    .fetch_optional(db)
    .await
}

/// Up to `limit` (1 to [`MAX_LIMIT`]) of the merchant's payments matching
/// `filter`, on `page`.
pub async fn list<'e>(
    db: impl PgExecutor<'e>,
    merchant_id: Uuid,
    filter: &Filter,
    page: Page,
    limit: i64,
) -> sqlx::Result<Listed> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let mut rows = query(merchant_id, filter, page, limit)
        .build_query_as::<PaymentRow>()
        .fetch_all(db)
        .await?;
    // One row more than the page was asked for: whether there are more.
    let has_more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    if matches!(page, Page::Before(_)) {
        // Read oldest first from the cursor, so the nearest newer payments
        // come first; shown newest first like every page.
        rows.reverse();
    }
    Ok(Listed { rows, has_more })
}

/// The statement of [`list`]. Only constant SQL is pushed; every value is a
/// bind.
fn query(
    merchant_id: Uuid,
    filter: &Filter,
    page: Page,
    limit: i64,
) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new("SELECT * FROM payments WHERE merchant_id = ");
    q.push_bind(merchant_id);
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(customer_id) = &filter.customer_id {
        q.push(" AND customer_id = ").push_bind(customer_id.clone());
    }
    if let Some(order_id) = &filter.order_id {
        q.push(" AND order_id = ").push_bind(order_id.clone());
    }
    if let Some(invoice_id) = &filter.invoice_id {
        q.push(" AND invoice_id = ").push_bind(invoice_id.clone());
    }
    if let Some(currency) = filter.currency {
        q.push(" AND currency = ")
            .push_bind(currency.as_str().to_owned());
    }
    if let Some(from) = filter.created_from {
        q.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(until) = filter.created_until {
        q.push(" AND created_at < ").push_bind(until);
    }
    if let Some(min) = filter.amount_min {
        q.push(" AND amount >= ").push_bind(min);
    }
    if let Some(max) = filter.amount_max {
        q.push(" AND amount <= ").push_bind(max);
    }
    // A row comparison, which PostgreSQL uses as one index condition on
    // (created_at DESC, id DESC): the scan starts right at the cursor.
    let order = match page {
        Page::First => " ORDER BY created_at DESC, id DESC",
        Page::After(at) => {
            q.push(" AND (created_at, id) < (")
                .push_bind(at.created_at)
                .push(", ")
                .push_bind(at.id)
                .push(")");
            " ORDER BY created_at DESC, id DESC"
        }
        Page::Before(at) => {
            q.push(" AND (created_at, id) > (")
                .push_bind(at.created_at)
                .push(", ")
                .push_bind(at.id)
                .push(")");
            " ORDER BY created_at ASC, id ASC"
        }
    };
    q.push(order).push(" LIMIT ").push_bind(limit + 1);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Position {
        Position {
            created_at: DateTime::UNIX_EPOCH,
            id: Uuid::nil(),
        }
    }

    #[test]
    fn the_statement_has_a_bind_for_every_value_and_no_value_in_its_text() {
        let filter = Filter {
            status: Some(PaymentStatus::Failed),
            customer_id: Some("cust_'; DROP TABLE payments; --".into()),
            order_id: Some("order_1".into()),
            invoice_id: Some("inv_1".into()),
            currency: Currency::parse("jpy").ok(),
            created_from: Some(DateTime::UNIX_EPOCH),
            created_until: Some(DateTime::UNIX_EPOCH),
            amount_min: Some(1),
            amount_max: Some(2),
        };
        let sql = query(Uuid::nil(), &filter, Page::After(at()), 10).into_sql();
        assert_eq!(
            sql,
            "SELECT * FROM payments WHERE merchant_id = $1 AND status = $2 \
             AND customer_id = $3 AND order_id = $4 AND invoice_id = $5 AND currency = $6 \
             AND created_at >= $7 AND created_at < $8 AND amount >= $9 AND amount <= $10 \
             AND (created_at, id) < ($11, $12) ORDER BY created_at DESC, id DESC LIMIT $13"
        );
    }

    #[test]
    fn no_filter_is_the_plain_list_and_ending_before_reads_upwards() {
        let first = query(Uuid::nil(), &Filter::default(), Page::First, 10).into_sql();
        assert_eq!(
            first,
            "SELECT * FROM payments WHERE merchant_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let before = query(Uuid::nil(), &Filter::default(), Page::Before(at()), 10).into_sql();
        assert_eq!(
            before,
            "SELECT * FROM payments WHERE merchant_id = $1 AND (created_at, id) > ($2, $3) \
             ORDER BY created_at ASC, id ASC LIMIT $4"
        );
    }
}
