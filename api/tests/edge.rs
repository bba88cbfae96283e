//! Bad input at the edge: every answer is in the error envelope (never a
//! `500`, never the framework's plain text), every stored string is free of
//! control characters, a payment has one id, and the durations an operator
//! types are bounded. Real PostgreSQL and RabbitMQ.

use reqwest::Method;
use serde_json::{json, Value};
use testkit::cards;
use testkit::{assert_error, payment_body, with_field, Options, TestApp};

/// `POST /v1/payments` with a body sent exactly as written.
async fn post_raw(app: &TestApp, body: &str) -> reqwest::Response {
    app.request(Method::POST, "/v1/payments")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("send")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_character_in_any_stored_string_is_a_400_naming_it_and_writes_nothing() {
    let app = TestApp::api_only().await;
    let base = payment_body(cards::VISA);
    let address = json!({"line1": "1 Main St", "line2": "Apt 2", "city": "Springfield",
        "state": "IL", "postal_code": "62701", "country": "US"});
    let with_address = with_field(base.clone(), &["billing_address"], address);
    let customer = json!({"email": "jane@example.com", "name": "Jane Doe"});
    let with_customer = with_field(base.clone(), &["customer"], customer);
    let mut cases: Vec<(Value, &str)> = vec![
        (
            with_field(base.clone(), &["metadata"], json!({"note": "a\u{0}b"})),
            "metadata.note",
        ),
        (
            with_field(base.clone(), &["metadata"], json!({"note": "bell\u{7}"})),
            "metadata.note",
        ),
        (
            with_field(base.clone(), &["metadata"], json!({"a\u{0}b": "value"})),
            "metadata",
        ),
        (
            with_field(base.clone(), &["order_id"], json!("order\u{0}1")),
            "order_id",
        ),
        (
            with_field(base.clone(), &["invoice_id"], json!("inv\u{1b}[31m")),
            "invoice_id",
        ),
        (
            with_field(base.clone(), &["customer_id"], json!("cust\u{0}")),
            "customer_id",
        ),
        (
            with_field(base.clone(), &["description"], json!("line\u{0}one")),
            "description",
        ),
        (
            with_field(base.clone(), &["statement_descriptor"], json!("SHOP\u{0}")),
            "statement_descriptor",
        ),
        (
            with_field(
                base.clone(),
                &["payment_method", "card", "token"],
                json!("tok_visa\u{0}"),
            ),
            "payment_method.card.token",
        ),
        (
            with_field(
                with_customer.clone(),
                &["customer", "name"],
                json!("Jane\u{0}"),
            ),
            "customer.name",
        ),
        (
            with_field(
                with_customer,
                &["customer", "email"],
                json!("ja\u{0}ne@example.com"),
            ),
            "customer.email",
        ),
    ];
    for field in ["line1", "line2", "city", "state", "postal_code"] {
        let param = match field {
            "line1" => "billing_address.line1",
            "line2" => "billing_address.line2",
            "city" => "billing_address.city",
            "state" => "billing_address.state",
            _ => "billing_address.postal_code",
        };
        cases.push((
            with_field(
                with_address.clone(),
                &["billing_address", field],
                json!("x\u{0}y"),
            ),
            param,
        ));
    }
    cases.push((
        with_field(
            with_address,
            &["billing_address", "country"],
            json!("U\u{0}"),
        ),
        "billing_address.country",
    ));
    for (body, param) in cases {
        let response = app.post_payment(&body).await;
        assert_error(response, 400, "invalid_request_error", Some(param)).await;
    }
    assert_eq!(app.payment_count().await, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_json_key_is_a_400_naming_the_key_wherever_it_is() {
    let app = TestApp::api_only().await;
    let cases = [
        (
            r#"{"amount": 100, "amount": 15000, "currency": "usd",
                "payment_method": {"type": "card", "card": {"token": "tok_visa"}}}"#,
            "amount",
        ),
        (
            r#"{"amount": 15000, "currency": "usd",
                "payment_method": {"type": "card", "card": {"token": "tok_visa", "token": "tok_amex"}}}"#,
            "payment_method.card.token",
        ),
        (
            r#"{"amount": 15000, "currency": "usd",
                "payment_method": {"type": "card", "card": {"token": "tok_visa"}},
                "metadata": {"note": "first", "note": "second"}}"#,
            "metadata.note",
        ),
    ];
    for (body, param) in cases {
        let error = assert_error(
            post_raw(&app, body).await,
            400,
            "invalid_request_error",
            Some(param),
        )
        .await;
        assert_eq!(error["code"], "duplicate_parameter", "{error}");
    }
    assert_eq!(app.payment_count().await, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frameworks_own_rejections_and_the_fallbacks_answer_in_the_envelope() {
    let app = TestApp::api_only().await;
    let operator = app.operator_key().await;

    // A path segment that is not UTF-8 once decoded.
    let response = app.get_as(&app.key, "/v1/payments/%FF").await;
    assert_error(response, 400, "invalid_request_error", None).await;
    let response = app.get_as(&app.key, "/v1/payments/pay_%C3%28").await;
    assert_error(response, 400, "invalid_request_error", None).await;

    // A query string that does not fit, named by its parameter.
    let list = "/v1/admin/dead-letters";
    for query in [
        "limit=abc",
        "limit=-1",
        "limit=99999999999999999999999",
        "limit=1&limit=2",
    ] {
        let response = app.get_as(&operator, &format!("{list}?{query}")).await;
        assert_error(response, 400, "invalid_request_error", Some("limit")).await;
    }
    let response = app.get_as(&operator, &format!("{list}?limit=0")).await;
    assert_error(response, 400, "invalid_request_error", Some("limit")).await;

    // Fallbacks: no such endpoint, no such method.
    let response = app.get_as(&app.key, "/v1/nothing-here").await;
    assert_error(response, 404, "not_found", None).await;
    let response = app
        .request(Method::DELETE, "/v1/payments")
        .send()
        .await
        .expect("send");
    assert_error(response, 405, "invalid_request_error", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_has_one_id_and_every_alias_of_it_is_a_404() {
    let app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    let uuid = id.strip_prefix("pay_").expect("pay_ prefix");
    assert_eq!(
        uuid,
        uuid.to_ascii_lowercase(),
        "ids are printed in lower case"
    );
    app.payment(&id).await;
    let aliases = [
        format!("pay_urn:uuid:{uuid}"),
        format!("pay_{}", uuid.replace('-', "")),
        format!("pay_%7B{uuid}%7D"),
        format!("pay_{}", uuid.to_ascii_uppercase()),
        format!("pay_{uuid}%20"),
        format!("PAY_{uuid}"),
    ];
    for alias in aliases {
        let response = app.get_as(&app.key, &format!("/v1/payments/{alias}")).await;
        let error = assert_error(response, 404, "not_found", None).await;
        assert_eq!(error["code"], "resource_missing", "{alias}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_than_beyond_ten_years_is_a_400_naming_it_and_replays_nothing() {
    let app = TestApp::with(Options::one_attempt()).await;
    let id = app.dead_letter(1).await.remove(0);
    let operator = app.operator_key().await;
    let replay = "/v1/admin/dead-letters/replay";
    // 10^13 s used to panic; 10^16 s wrapped and replayed a letter seconds old.
    for secs in [
        json!(10_000_000_000_000_u64),
        json!(10_000_000_000_000_000_u64),
        json!(u64::MAX),
        json!(315_360_001),
    ] {
        let response = app
            .post_as(
                &operator,
                replay,
                &json!({"all": true, "older_than_secs": secs}),
            )
            .await;
        assert_error(
            response,
            400,
            "invalid_request_error",
            Some("older_than_secs"),
        )
        .await;
    }
    assert_eq!(app.queue_depth("dead").await, 1, "nothing was replayed");
    assert_eq!(app.payment(&id).await["status"], "failed");

    // Ten years exactly is allowed: the letter is younger, so it stays.
    let (_, report) = app
        .call(
            &operator,
            Method::POST,
            replay,
            Some(json!({"all": true, "older_than_secs": 315_360_000})),
            &[],
        )
        .await;
    assert_eq!(
        (report["replayed"].clone(), report["kept"].clone()),
        (json!([]), json!(1)),
        "{report}"
    );
    assert_eq!(app.queue_depth("dead").await, 1);
}
