//! Listing payments (`GET /v1/payments`) when one merchant has a million.
//!
//! A fresh database is filled in a few `INSERT … SELECT generate_series`
//! statements (the API path would take far longer and measure something
//! else): one merchant, the key's, with `--list-payments` payments spread
//! over about a year, and three other merchants with a tenth as many each,
//! interleaved in time, so the list's index holds other merchants' rows
//! around the listed one's. Rows look like processed payments: 92 %
//! `succeeded`, 7.9 % `failed`, the rest `pending` or `processing`; 90 % USD,
//! 6 % EUR, 3 % GBP, 1 % JPY; 50,000 customers; every payment its own order,
//! every other one an invoice.
//!
//! Then, after a `VACUUM ANALYZE` and a few untimed requests per case, one
//! client asks the API (the release binary, no worker running) for one page
//! of 10 after another, each request waiting for the previous answer, and
//! the latency percentiles of each case are reported: the first page, a
//! cursor near the end of the list (both directions), indexed filters
//! (`status`, `customer_id`) and the unindexed `currency` filter on a
//! currency that 1 % of the payments use.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::scenarios::{check, Check};
use crate::stats::{ms, Percentiles};
use crate::system::{Cleanup, Env, System};
use crate::template::{fill, row, table};

/// Untimed requests per case before the timed ones.
const WARMUP: usize = 20;
/// Seconds between two of the merchant's payments in the fill (a million
/// span about a year).
const SPACING_S: f64 = 30.0;
/// Payments of each of the other merchants, as a share of the listed one's.
const OTHERS: u64 = 3;
const OTHER_SHARE: u64 = 10;

/// One page of 10 listed again and again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListCase {
    pub name: String,
    /// The query string (cursor ids shortened to `pay_…`).
    pub query: String,
    /// Payments on the page (the same on every request).
    pub items: usize,
    pub latency: Option<Percentiles>,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListResult {
    /// Payments of the merchant whose list is read.
    pub payments: u64,
    /// Payments of the other merchants in the same table.
    pub other_payments: u64,
    /// Seconds the fill took (all merchants, before `VACUUM ANALYZE`).
    pub fill_s: f64,
    /// Timed requests per case.
    pub requests: usize,
    pub cases: Vec<ListCase>,
}

/// Fills a fresh database and measures the list's latency in each case.
pub async fn run(
    env: &Env,
    cleanup: &Cleanup,
    payments: u64,
    requests: usize,
    checks: &mut Vec<Check>,
) -> anyhow::Result<ListResult> {
    // No worker runs, so no processor is needed.
    let sys = System::start(env, cleanup, "http://127.0.0.1:9", "list", 1, 0).await?;
    eprintln!(
        "[list] filling: {payments} payments of one merchant, {} of {OTHERS} others",
        OTHERS * (payments / OTHER_SHARE)
    );
    let started = Instant::now();
    let other_payments = fill(&sys.pool, payments).await?;
    let fill_s = started.elapsed().as_secs_f64();
    crate::floor::analyze(&sys.pool).await?;
    eprintln!("[list] filled in {fill_s:.0} s");

    let deep = deep_cursor(&sys.pool, payments).await?;
    // Every case asks for a page of 10; the filter is appended.
    let cases = [
        ("first page", String::new()),
        (
            "deep cursor (starting_after, 20 from the end)",
            format!("&starting_after={deep}"),
        ),
        (
            "deep cursor backwards (ending_before)",
            format!("&ending_before={deep}"),
        ),
        ("status=failed (indexed, 7.9 %)", "&status=failed".into()),
        ("customer_id (indexed)", "&customer_id=cust_4242".into()),
        ("currency=JPY (not indexed, 1 %)", "&currency=JPY".into()),
    ];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()?;
    let mut results = Vec::with_capacity(cases.len());
    for (name, filter) in cases {
        let query = format!("limit=10{filter}");
        let url = format!("{}/v1/payments?{query}", sys.api_url);
        let (items, latency, errors) = measure(&client, &url, &sys.key, requests).await;
        eprintln!(
            "[list] {name}: p50 {} p99 {}, {items} items, {errors} errors",
            ms(latency.map(|l| l.p50_ms)),
            ms(latency.map(|l| l.p99_ms)),
        );
        let query = query.replace(&deep, "pay_…");
        results.push(ListCase {
            name: name.to_owned(),
            query,
            items,
            latency,
            errors,
        });
    }

    let errors: u64 = results.iter().map(|c| c.errors).sum();
    checks.push(check(
        "list",
        "every list request answered 200",
        errors == 0,
        format!("{errors} errors in {} requests", results.len() * requests),
    ));
    let full: Vec<String> = results
        .iter()
        .take(3)
        .map(|c| format!("{}: {}", c.name, c.items))
        .collect();
    checks.push(check(
        "list",
        "first page and both deep cursors hold 10 payments",
        results.iter().take(3).all(|c| c.items == 10),
        full.join("; "),
    ));
    sys.stop(env, cleanup).await?;
    Ok(ListResult {
        payments,
        other_payments,
        fill_s,
        requests,
        cases: results,
    })
}

/// `requests` sequential GETs after [`WARMUP`] untimed ones: payments on the
/// page, latencies and errors.
async fn measure(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    requests: usize,
) -> (usize, Option<Percentiles>, u64) {
    let (mut samples, mut items, mut errors) = (Vec::with_capacity(requests), 0, 0);
    for i in 0..WARMUP + requests {
        let started = Instant::now();
        let answer = async {
            let response = client
                .get(url)
                .bearer_auth(key)
                .send()
                .await?
                .error_for_status()?;
            response.json::<serde_json::Value>().await
        }
        .await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match answer {
            Ok(body) => {
                items = body["data"].as_array().map_or(0, Vec::len);
                if i >= WARMUP {
                    samples.push(elapsed_ms);
                }
            }
            Err(_) => errors += 1,
        }
    }
    (items, Percentiles::of(&mut samples), errors)
}

/// The merchant's payments, then the others', in one statement each.
/// Returns how many payments the other merchants got.
async fn fill(pool: &PgPool, payments: u64) -> anyhow::Result<u64> {
    let merchant: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM merchants WHERE name = 'default'")
            .fetch_one(pool)
            .await
            .context("the bench key's merchant")?;
    insert(pool, merchant, payments, SPACING_S).await?;
    let others = payments / OTHER_SHARE;
    for i in 0..OTHERS {
        let other: uuid::Uuid =
            sqlx::query_scalar("INSERT INTO merchants (id, name) VALUES ($1, $2) RETURNING id")
                .bind(uuid::Uuid::now_v7())
                .bind(format!("other {i}"))
                .fetch_one(pool)
                .await?;
        // Over the same year as the listed merchant's.
        insert(pool, other, others, SPACING_S * OTHER_SHARE as f64).await?;
    }
    Ok(OTHERS * others)
}

/// `n` payments of `merchant`, the newest now, `spacing` seconds apart (with
/// jitter). Ids are UUIDv7 of their creation time, as the API makes them.
async fn insert(pool: &PgPool, merchant: uuid::Uuid, n: u64, spacing: f64) -> anyhow::Result<()> {
    sqlx::query(
        r#"INSERT INTO payments (id, merchant_id, status, amount, currency, capture, captured,
               card_token, order_id, invoice_id, customer_id, description, card,
               processor_response, attempts, created_at, updated_at, finished_at,
               receipt_number)
           SELECT
               (lpad(to_hex((extract(epoch FROM g.ts) * 1000)::bigint), 12, '0') || '7'
                   || substr(md5(random()::text), 1, 3)
                   || to_hex(8 + floor(random() * 4)::int)
                   || substr(md5(random()::text), 1, 15))::uuid,
               $1, g.status, g.amount, g.currency, true, g.status = 'succeeded', 'tok_visa',
               'order_' || g.i, CASE WHEN g.i % 2 = 0 THEN 'inv_' || g.i END,
               'cust_' || (g.i % 50000), 'Order #' || g.i,
               CASE WHEN g.status IN ('succeeded', 'failed') THEN
                   '{"last4": "4242", "brand": "visa", "exp_month": 12, "exp_year": 2030,
                     "fingerprint": "fp_bench", "country": "US", "funding": "credit"}'::jsonb
               END,
               CASE WHEN g.status IN ('succeeded', 'failed') THEN jsonb_build_object(
                   'approved', g.status = 'succeeded', 'authorization_code', 'A12345',
                   'avs_result', 'Y', 'cvv_result', 'M',
                   'network_transaction_id', 'ntx_' || g.i, 'processor', 'processor-sim',
                   'risk_score', 12, 'decline_code', NULL)
               END,
               CASE WHEN g.status = 'pending' THEN 0 ELSE 1 END,
               g.ts, g.ts, CASE WHEN g.status IN ('succeeded', 'failed') THEN g.ts END,
               nextval(receipt_sequence($1))
           FROM (
               SELECT i,
                      now() - make_interval(secs => ($2 - i) * $3 + random() * $3) AS ts,
                      CASE WHEN r < 0.92 THEN 'succeeded' WHEN r < 0.999 THEN 'failed'
                           WHEN r < 0.9999 THEN 'pending' ELSE 'processing' END AS status,
                      100 + floor(random() * 99900)::bigint AS amount,
                      CASE WHEN c < 0.90 THEN 'USD' WHEN c < 0.96 THEN 'EUR'
                           WHEN c < 0.99 THEN 'GBP' ELSE 'JPY' END AS currency
               FROM (SELECT i, random() AS r, random() AS c
                     FROM generate_series(1, $2) AS i) s
           ) g"#,
    )
    .bind(merchant)
    .bind(i64::try_from(n)?)
    .bind(spacing)
    .execute(pool)
    .await
    .context("filling payments")?;
    Ok(())
}

/// The public id of the merchant's payment 20 from the oldest end.
async fn deep_cursor(pool: &PgPool, payments: u64) -> anyhow::Result<String> {
    let id: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM payments
         WHERE merchant_id = (SELECT id FROM merchants WHERE name = 'default')
         ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
    )
    .bind(i64::try_from(payments.saturating_sub(20))?)
    .fetch_one(pool)
    .await
    .context("finding a deep cursor")?;
    Ok(format!("pay_{}", id.hyphenated()))
}

impl ListResult {
    /// The report's section (block `list` of the page's template).
    pub fn markdown(&self) -> String {
        let head = "case | query | payments on the page | p50 | p99 | max | errors";
        let rows = self.cases.iter().map(|c| {
            let l = c.latency;
            row![
                c.name,
                format!("`{}`", c.query),
                c.items,
                ms(l.map(|l| l.p50_ms)),
                ms(l.map(|l| l.p99_ms)),
                ms(l.map(|l| l.max_ms)),
                c.errors
            ]
        });
        fill!(
            "list",
            payments = self.payments,
            other_payments = self.other_payments,
            fill_s = format!("{:.0}", self.fill_s),
            requests = self.requests,
            warmup = WARMUP,
            list_table = table(head, rows),
        )
    }
}
