//! The read side of a payment's life: `GET /v1/payments` (newest first,
//! cursor pages, filters, one merchant's payments only) and the HTML receipt
//! at `receipt_url`. Real PostgreSQL and RabbitMQ; where a test needs
//! processed payments (card details, statuses) a worker charges them through
//! processor-sim.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::cards;
use testkit::{assert_error, payment_body, TestApp};

/// A payment request of `customer_id`, with the seed's other fields.
fn body_for(customer_id: &str) -> Value {
    let mut body = payment_body(cards::VISA);
    body["customer_id"] = json!(customer_id);
    body
}

async fn get_list(app: &TestApp, key: &str, query: &str) -> reqwest::Response {
    app.get_as(key, &format!("/v1/payments?{query}")).await
}

/// One page as the test's default merchant sees it: its ids and `has_more`.
async fn page(app: &TestApp, query: &str) -> (Vec<String>, bool) {
    page_as(app, &app.key, query).await
}

async fn page_as(app: &TestApp, key: &str, query: &str) -> (Vec<String>, bool) {
    let response = get_list(app, key, query).await;
    assert_eq!(response.status(), 200, "GET /v1/payments?{query}");
    let list: Value = response.json().await.expect("json");
    assert_eq!(list["object"], "list", "{list}");
    assert_eq!(list["url"], "/v1/payments", "{list}");
    let ids = list["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect();
    (ids, list["has_more"].as_bool().expect("has_more"))
}

/// The set of ids a filtered query returns (one page of up to 100).
async fn matching(app: &TestApp, query: &str) -> BTreeSet<String> {
    let (ids, has_more) = page(app, &format!("limit=100&{query}")).await;
    assert!(!has_more, "the test's payments fit one page");
    ids.into_iter().collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).clone()).collect()
}

/// Asserts a `400` in the envelope naming `param`.
async fn assert_invalid(response: reqwest::Response, param: &str) {
    assert_error(response, 400, "invalid_request_error", Some(param)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_three_payments_paged_by_ten_come_newest_first_with_no_gap_or_repeat_while_more_arrive(
) {
    let app = TestApp::api_only().await;
    // Another customer's payments interleave; the filter keeps them out.
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(
            app.create_payment_as(&app.key, &body_for("cust_pages"))
                .await,
        );
        if i % 5 == 0 {
            app.create_payment_as(&app.key, &body_for("cust_other"))
                .await;
        }
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut query = "customer_id=cust_pages&limit=10".to_owned();
    let mut pages = Vec::new();
    loop {
        let (ids, has_more) = page(&app, &query).await;
        pages.push((ids.len(), has_more));
        // New payments of the same customer arrive between page fetches:
        // they are newer than every cursor, so they never enter a later page.
        app.create_payment_as(&app.key, &body_for("cust_pages"))
            .await;
        app.create_payment_as(&app.key, &body_for("cust_pages"))
            .await;
        let last = ids.last().cloned();
        seen.extend(ids);
        match (has_more, last) {
            (true, Some(last)) => {
                query = format!("customer_id=cust_pages&limit=10&starting_after={last}")
            }
            _ => break,
        }
    }
    assert_eq!(pages, [(10, true), (10, true), (3, false)]);
    assert_eq!(seen, newest_first, "every payment once, newest first");

    // The newest page now starts with the six that arrived meanwhile.
    let (ids, has_more) = page(&app, "customer_id=cust_pages&limit=10").await;
    assert!(has_more);
    assert!(!newest_first.contains(&ids[0]));
    assert_eq!(ids[6], newest_first[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_before_pages_back_towards_the_newest_and_still_lists_newest_first() {
    let app = TestApp::api_only().await;
    let created = app.submit(cards::VISA, 23).await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let (first, _) = page(&app, "limit=10").await;
    let (second, _) = page(&app, &format!("limit=10&starting_after={}", first[9])).await;
    let (third, has_more) = page(&app, &format!("limit=10&starting_after={}", second[9])).await;
    assert_eq!(
        [first.clone(), second.clone(), third.clone()].concat(),
        newest_first
    );
    assert!(!has_more);

    // Back from the third page: the five just newer than its first payment,
    // newest first, and more beyond them.
    let (back, has_more) = page(&app, &format!("limit=5&ending_before={}", third[0])).await;
    assert_eq!(back, second[5..]);
    assert!(has_more, "newer payments lie beyond");
    // Back from the second page: the whole first page, and nothing newer.
    let (back, has_more) = page(&app, &format!("limit=10&ending_before={}", second[0])).await;
    assert_eq!(back, first);
    assert!(!has_more, "nothing is newer than the first page");
    // From the newest payment there is nothing newer.
    let (back, has_more) = page(&app, &format!("ending_before={}", first[0])).await;
    assert!(back.is_empty() && !has_more);
    // The default limit is 10.
    let (ids, has_more) = page(&app, "").await;
    assert_eq!(ids, first);
    assert!(has_more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_items_are_exactly_the_payment_objects_get_returns() {
    let app = TestApp::api_only().await;
    app.submit(cards::VISA, 3).await;
    let list: Value = get_list(&app, &app.key, "limit=3")
        .await
        .json()
        .await
        .expect("json");
    for item in list["data"].as_array().expect("data") {
        let id = item["id"].as_str().expect("id");
        assert_eq!(item, &app.payment(id).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_keeps_exactly_the_matching_payments() {
    let app = TestApp::spawn().await;
    let make = |token: &str, amount: i64, currency: &str, customer: &str, order: &str| {
        let mut body = payment_body(token);
        body["amount"] = json!(amount);
        body["currency"] = json!(currency);
        body["customer_id"] = json!(customer);
        body["order_id"] = json!(order);
        body
    };
    let mut with_invoice = make(cards::VISA, 500, "USD", "cust_a", "order_1");
    with_invoice["invoice_id"] = json!("inv_1");
    let a = app.create_payment_as(&app.key, &with_invoice).await;
    let b = app
        .create_payment_as(
            &app.key,
            &make(cards::DECLINED, 1_000, "USD", "cust_a", "order_2"),
        )
        .await;
    let c = app
        .create_payment_as(
            &app.key,
            &make(cards::VISA, 1_500, "JPY", "cust_b", "order_3"),
        )
        .await;
    let d = app
        .create_payment_as(
            &app.key,
            &make(cards::VISA, 2_000, "eur", "cust_b", "order_3"),
        )
        .await;
    let mut no_ids = payment_body(cards::INSUFFICIENT_FUNDS);
    for field in ["customer_id", "order_id"] {
        no_ids.as_object_mut().expect("object").remove(field);
    }
    no_ids["amount"] = json!(2_500);
    let e = app.create_payment_as(&app.key, &no_ids).await;
    app.wait_all_terminal(5, Duration::from_secs(30)).await;

    // Creation times set apart, so the created[...] bounds have something to
    // tell apart: a, and b half a second later, in second 1704067200
    // (2024-01-01T00:00:00Z); c a day later; d and e now.
    for (id, at) in [
        (&a, "2024-01-01T00:00:00Z"),
        (&b, "2024-01-01T00:00:00.5Z"),
        (&c, "2024-01-02T00:00:00Z"),
    ] {
        sqlx::query("UPDATE payments SET created_at = $2::timestamptz WHERE id = $1")
            .bind(uuid::Uuid::parse_str(id.trim_start_matches("pay_")).expect("uuid"))
            .bind(at)
            .execute(&app.pool)
            .await
            .expect("set created_at");
    }

    let all = set(&[&a, &b, &c, &d, &e]);
    assert_eq!(matching(&app, "").await, all);
    let cases: Vec<(&str, BTreeSet<String>)> = vec![
        ("status=succeeded", set(&[&a, &c, &d])),
        ("status=failed", set(&[&b, &e])),
        ("status=pending", set(&[])),
        ("customer_id=cust_a", set(&[&a, &b])),
        ("customer_id=cust_b", set(&[&c, &d])),
        ("customer_id=cust_none", set(&[])),
        ("order_id=order_3", set(&[&c, &d])),
        ("invoice_id=inv_1", set(&[&a])),
        ("currency=USD", set(&[&a, &b, &e])),
        ("currency=jpy", set(&[&c])),
        ("currency=EUR", set(&[&d])),
        ("currency=GBP", set(&[])),
        (
            "created[gte]=1704067200&created[lt]=1704067201",
            set(&[&a, &b]),
        ),
        ("created[lte]=1704067200", set(&[&a, &b])),
        ("created[gt]=1704067200&created[lte]=1704153600", set(&[&c])),
        ("created[gt]=1704153600", set(&[&d, &e])),
        ("created[lt]=1704067200", set(&[])),
        ("amount[gte]=1500", set(&[&c, &d, &e])),
        ("amount[lte]=1000", set(&[&a, &b])),
        ("amount[gte]=1000&amount[lte]=2000", set(&[&b, &c, &d])),
        ("amount[gte]=2001&amount[lte]=2000", set(&[])),
        // Filters combine.
        (
            "status=succeeded&customer_id=cust_b&currency=EUR",
            set(&[&d]),
        ),
        ("status=failed&amount[gte]=2000", set(&[&e])),
    ];
    for (query, expected) in cases {
        assert_eq!(matching(&app, query).await, expected, "{query}");
    }

    // A filter and a cursor together: after d, the older succeeded ones.
    let (ids, has_more) = page(&app, &format!("status=succeeded&starting_after={d}")).await;
    assert_eq!(ids, [c.clone(), a.clone()]);
    assert!(!has_more);
    // The cursor need not match the filter: it is a position in the list.
    let (ids, _) = page(&app, &format!("status=succeeded&starting_after={e}")).await;
    assert_eq!(ids, [d.clone(), c.clone(), a.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_merchants_payments_never_appear() {
    let app = TestApp::api_only().await;
    let other = app
        .key_for("another merchant", &["payments:read", "payments:write"])
        .await;
    let mine = app.submit(cards::VISA, 3).await;
    let mut theirs = Vec::new();
    for _ in 0..4 {
        // The same customer and order ids as the default merchant's.
        theirs.push(
            app.create_payment_as(&other, &payment_body(cards::VISA))
                .await,
        );
    }

    let (ids, has_more) = page(&app, "limit=100").await;
    assert_eq!(ids.iter().collect::<BTreeSet<_>>(), mine.iter().collect());
    assert!(!has_more);
    let (ids, _) = page_as(&app, &other, "limit=100").await;
    assert_eq!(ids.iter().collect::<BTreeSet<_>>(), theirs.iter().collect());
    let (ids, _) = page(&app, "customer_id=cust_abc123&order_id=order_123456").await;
    assert_eq!(ids.iter().collect::<BTreeSet<_>>(), mine.iter().collect());

    // Their payment is no cursor of mine: the same answer as an unknown id.
    for param in ["starting_after", "ending_before"] {
        assert_invalid(
            get_list(&app, &app.key, &format!("{param}={}", theirs[0])).await,
            param,
        )
        .await;
        let unknown = common::domain::PaymentId::new();
        assert_invalid(
            get_list(&app, &app.key, &format!("{param}={unknown}")).await,
            param,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_list_parameters_are_400s_naming_the_param_and_reading_needs_the_read_scope() {
    let app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    for (query, param) in [
        ("limit=101".to_owned(), "limit"),
        ("limit=0".to_owned(), "limit"),
        ("limit=many".to_owned(), "limit"),
        (
            format!("starting_after={id}&ending_before={id}"),
            "ending_before",
        ),
        ("starting_after=pay_123".to_owned(), "starting_after"),
        ("ending_before=".to_owned(), "ending_before"),
        ("status=refunded_maybe".to_owned(), "status"),
        ("currency=dollars".to_owned(), "currency"),
        ("created[gt]=yesterday".to_owned(), "created[gt]"),
        ("created%5Blte%5D=-3".to_owned(), "created[lte]"),
        ("amount[gte]=-1".to_owned(), "amount[gte]"),
        ("customer_id=".to_owned(), "customer_id"),
        ("order_id=a%00b".to_owned(), "order_id"),
        ("colour=blue".to_owned(), "colour"),
        ("limit=1&limit=2".to_owned(), "limit"),
    ] {
        assert_invalid(get_list(&app, &app.key, &query).await, param).await;
    }

    let write_only = app.key_for("default", &["payments:write"]).await;
    let response = get_list(&app, &write_only, "").await;
    assert_eq!(response.status(), 403);
    let response = app
        .http
        .get(app.url("/v1/payments"))
        .send()
        .await
        .expect("GET without a key");
    assert_eq!(response.status(), 401);
    // Listing and creating share a path; each method still works.
    let response = app
        .request(reqwest::Method::DELETE, "/v1/payments")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status(), 405);
}

/// The receipt at the payment's `receipt_url`, fetched without any key:
/// status, headers and page.
async fn fetch_receipt(
    app: &TestApp,
    payment_id: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let payment = app.payment(payment_id).await;
    let url = payment["receipt_url"].as_str().expect("receipt_url");
    assert_eq!(url, app.url(&format!("/receipts/{payment_id}")));
    let response = app.http.get(url).send().await.expect("GET receipt");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_is_an_html_page_with_the_card_and_the_amount_in_major_units() {
    let app = TestApp::spawn().await;
    let mut usd = payment_body("tok_receiptsecret4242");
    usd["customer"] = json!({"email": "jane@example.com", "name": "Jane Customer"});
    let usd = app.create_payment_as(&app.key, &usd).await;
    let mut jpy = payment_body(cards::VISA);
    jpy["currency"] = json!("JPY");
    let jpy = app.create_payment_as(&app.key, &jpy).await;
    let mut kwd = payment_body(cards::MASTERCARD);
    kwd["currency"] = json!("KWD");
    kwd["amount"] = json!(1_500);
    let kwd = app.create_payment_as(&app.key, &kwd).await;
    app.wait_all_terminal(3, Duration::from_secs(30)).await;

    let (status, headers, page) = fetch_receipt(&app, &usd).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().expect("ascii");
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    let number = app.payment(&usd).await["receipt_number"]
        .as_str()
        .expect("receipt_number")
        .to_owned();
    for shown in [
        "default",
        "150.00 USD",
        "Visa •••• 4242",
        "Paid",
        number.as_str(),
    ] {
        assert!(page.contains(shown), "{shown:?} missing from {page}");
    }
    for hidden in [
        "tok_",
        "receiptsecret",
        "jane@example.com",
        "Jane Customer",
        "fingerprint",
    ] {
        assert!(!page.contains(hidden), "{hidden:?} shown in {page}");
    }

    let (status, _, page) = fetch_receipt(&app, &jpy).await;
    assert_eq!(status, 200);
    assert!(page.contains("15,000 JPY"), "{page}");
    assert!(!page.contains("150.00"), "yen have no minor unit: {page}");
    let (_, _, page) = fetch_receipt(&app, &kwd).await;
    assert!(page.contains("1.500 KWD"), "{page}");
    assert!(page.contains("Mastercard •••• 4444"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_numbers_count_per_merchant_and_say_nothing_of_the_others() {
    let app = TestApp::api_only().await;
    let other = app
        .key_for("other", &["payments:read", "payments:write"])
        .await;
    let body = payment_body(cards::VISA);
    let number = |payment: Value| payment["receipt_number"].as_str().map(str::to_owned);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    // Interleaved: A, B, A, B, A.
    for i in 0..5 {
        if i % 2 == 0 {
            let id = app.create_payment(cards::VISA).await;
            ours.push(number(app.payment(&id).await));
        } else {
            let id = app.create_payment_as(&other, &body).await;
            let payment: Value = app
                .get_as(&other, &format!("/v1/payments/{id}"))
                .await
                .json()
                .await
                .expect("json");
            theirs.push(number(payment));
        }
    }
    let expect = |n: usize| {
        (1..=n)
            .map(|i| Some(format!("0000-{i:04}")))
            .collect::<Vec<_>>()
    };
    assert_eq!(ours, expect(3), "the first merchant's own count");
    assert_eq!(theirs, expect(2), "the second merchant's own count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_name_with_markup_is_escaped_on_the_receipt() {
    let app = TestApp::api_only().await;
    let name = "<script>alert('owned')</script> & \"Sons\"";
    let key = app
        .key_for(name, &["payments:read", "payments:write"])
        .await;
    let mut body = payment_body(cards::VISA);
    body["description"] = json!("<img src=x onerror=alert(1)>");
    let id = app.create_payment_as(&key, &body).await;

    let url = app.url(&format!("/receipts/{id}"));
    let response = app.http.get(&url).send().await.expect("GET receipt");
    assert_eq!(response.status(), 200);
    let page = response.text().await.expect("text");
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert('owned')&lt;/script&gt; &amp; &quot;Sons&quot;"),
        "{page}"
    );
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    // Not processed yet: the page says so, and shows no card.
    assert!(page.contains("Processing"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_malformed_receipt_id_is_a_404() {
    let app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    let unknown = common::domain::PaymentId::new().to_string();
    for path in [
        unknown,
        "nope".to_owned(),
        id.to_uppercase(),
        id.trim_start_matches("pay_").to_owned(),
        format!("{id}x"),
    ] {
        let response = app
            .http
            .get(app.url(&format!("/receipts/{path}")))
            .send()
            .await
            .expect("GET receipt");
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.expect("JSON envelope");
        assert_eq!(body["error"]["type"], "not_found", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_the_domain_rejects_fails_the_read_instead_of_reaching_a_client() {
    let app = TestApp::api_only().await;
    let good = app.create_payment(cards::VISA).await;
    let bad = app.create_payment(cards::VISA).await;
    // `XYZ` passes the schema's check (three capital letters) but is no
    // ISO 4217 currency: a hand-made fix gone wrong in the database.
    let corrupted = sqlx::query("UPDATE payments SET currency = 'XYZ' WHERE 'pay_' || id = $1")
        .bind(&bad)
        .execute(&app.pool)
        .await
        .expect("corrupt the row");
    assert_eq!(corrupted.rows_affected(), 1);

    // The row is refused when read (a decode error, answered as the
    // documented 500), never shown with a currency nobody can charge.
    let response = app.get_as(&app.key, &format!("/v1/payments/{bad}")).await;
    let body = assert_error(response, 500, "api_error", None).await;
    assert_eq!(body["code"], "internal_error", "{body}");
    assert!(!body.to_string().contains("XYZ"), "{body}");
    let response = get_list(&app, &app.key, "limit=10").await;
    assert_error(response, 500, "api_error", None).await;
    // Every other payment reads as before.
    let (status, payment) = app.get(&format!("/v1/payments/{good}")).await;
    assert_eq!(status, 200, "{payment}");
    assert_eq!(payment["currency"], "USD", "{payment}");
}
