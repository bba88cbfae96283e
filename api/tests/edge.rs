//! Bad input at the edge: every answer is in the error envelope (never a
//! `500`, never the framework's plain text), every stored string is free of
//! control characters, a payment has one id, and the durations an operator
//! types are bounded. Real PostgreSQL and RabbitMQ.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::{payment_body, Options, TestApp};

async fn app() -> TestApp {
    TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await
}

/// Asserts the response is the documented envelope with this status, type and
/// param, quoting the response's own `Request-Id`; returns the error object.
async fn assert_error(
    response: reqwest::Response,
    status: u16,
    kind: &str,
    param: Option<&str>,
) -> Value {
    let got = response.status().as_u16();
    let request_id = response
        .headers()
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("Request-Id header on every response");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "status; body: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "JSON, not {content_type:?}: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("JSON error body");
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["param"].as_str(), param, "{body}");
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(error["request_id"], request_id.as_str(), "{body}");
    error.clone()
}

fn with(mut body: Value, path: &[&str], value: Value) -> Value {
    let mut target = &mut body;
    for key in &path[..path.len() - 1] {
        target = &mut target[*key];
    }
    target[path[path.len() - 1]] = value;
    body
}

/// `POST /v1/payments` with a body sent exactly as written.
async fn post_raw(app: &TestApp, body: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/payments", app.api_url))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("send")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_character_in_any_stored_string_is_a_400_naming_it_and_writes_nothing() {
    let app = app().await;
    let base = payment_body("tok_visa");
    let address = json!({"line1": "1 Main St", "line2": "Apt 2", "city": "Springfield",
        "state": "IL", "postal_code": "62701", "country": "US"});
    let with_address = with(base.clone(), &["billing_address"], address);
    let customer = json!({"email": "jane@example.com", "name": "Jane Doe"});
    let with_customer = with(base.clone(), &["customer"], customer);
    let mut cases: Vec<(Value, &str)> = vec![
        (
            with(base.clone(), &["metadata"], json!({"note": "a\u{0}b"})),
            "metadata.note",
        ),
        (
            with(base.clone(), &["metadata"], json!({"note": "bell\u{7}"})),
            "metadata.note",
        ),
        (
            with(base.clone(), &["metadata"], json!({"a\u{0}b": "value"})),
            "metadata",
        ),
        (
            with(base.clone(), &["order_id"], json!("order\u{0}1")),
            "order_id",
        ),
        (
            with(base.clone(), &["invoice_id"], json!("inv\u{1b}[31m")),
            "invoice_id",
        ),
        (
            with(base.clone(), &["customer_id"], json!("cust\u{0}")),
            "customer_id",
        ),
        (
            with(base.clone(), &["description"], json!("line\u{0}one")),
            "description",
        ),
        (
            with(base.clone(), &["statement_descriptor"], json!("SHOP\u{0}")),
            "statement_descriptor",
        ),
        (
            with(
                base.clone(),
                &["payment_method", "card", "token"],
                json!("tok_visa\u{0}"),
            ),
            "payment_method.card.token",
        ),
        (
            with(
                with_customer.clone(),
                &["customer", "name"],
                json!("Jane\u{0}"),
            ),
            "customer.name",
        ),
        (
            with(
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
            with(
                with_address.clone(),
                &["billing_address", field],
                json!("x\u{0}y"),
            ),
            param,
        ));
    }
    cases.push((
        with(
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
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_json_key_is_a_400_naming_the_key_wherever_it_is() {
    let app = app().await;
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
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frameworks_own_rejections_and_the_fallbacks_answer_in_the_envelope() {
    let app = app().await;
    let operator = app.operator_key().await;
    let get = |url: String, key: &str| {
        let request = app.http.get(url).bearer_auth(key);
        async move { request.send().await.expect("send") }
    };

    // A path segment that is not UTF-8 once decoded.
    let response = get(format!("{}/v1/payments/%FF", app.api_url), &app.key).await;
    assert_error(response, 400, "invalid_request_error", None).await;
    let response = get(format!("{}/v1/payments/pay_%C3%28", app.api_url), &app.key).await;
    assert_error(response, 400, "invalid_request_error", None).await;

    // A query string that does not fit, named by its parameter.
    let list = format!("{}/v1/admin/dead-letters", app.api_url);
    for query in [
        "limit=abc",
        "limit=-1",
        "limit=99999999999999999999999",
        "limit=1&limit=2",
    ] {
        let response = get(format!("{list}?{query}"), &operator).await;
        assert_error(response, 400, "invalid_request_error", Some("limit")).await;
    }
    let response = get(format!("{list}?limit=0"), &operator).await;
    assert_error(response, 400, "invalid_request_error", Some("limit")).await;

    // Fallbacks: no such endpoint, no such method.
    let response = get(format!("{}/v1/nothing-here", app.api_url), &app.key).await;
    assert_error(response, 404, "not_found", None).await;
    let response = app
        .http
        .delete(format!("{}/v1/payments", app.api_url))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("send");
    assert_error(response, 405, "invalid_request_error", None).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_has_one_id_and_every_alias_of_it_is_a_404() {
    let app = app().await;
    let id = app.create_payment("tok_visa").await;
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
        let response = app
            .http
            .get(format!("{}/v1/payments/{alias}", app.api_url))
            .bearer_auth(&app.key)
            .send()
            .await
            .expect("send");
        let error = assert_error(response, 404, "not_found", None).await;
        assert_eq!(error["code"], "resource_missing", "{alias}: {error}");
    }
    app.cleanup().await;
}

/// Dead-letters one payment by running it through a processor outage with a
/// single attempt allowed.
async fn one_dead_letter() -> (TestApp, String) {
    let mut settings = testkit::fast_worker_settings();
    settings.max_attempts = 1;
    let app = TestApp::with(Options {
        worker: settings,
        ..Options::default()
    })
    .await;
    app.set_faults(json!({"outage": true})).await;
    let id = app.create_payment("tok_visa").await;
    app.wait_all_terminal(1, Duration::from_secs(60)).await;
    app.eventually("the dead letter", Duration::from_secs(10), || async {
        (app.queue_depth("dead").await == 1).then_some(())
    })
    .await;
    app.set_faults(json!({"outage": false})).await;
    (app, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_than_beyond_ten_years_is_a_400_naming_it_and_replays_nothing() {
    let (app, id) = one_dead_letter().await;
    let operator = app.operator_key().await;
    let replay = format!("{}/v1/admin/dead-letters/replay", app.api_url);
    // 10^13 s used to panic; 10^16 s wrapped and replayed a letter seconds old.
    for secs in [
        json!(10_000_000_000_000_u64),
        json!(10_000_000_000_000_000_u64),
        json!(u64::MAX),
        json!(315_360_001),
    ] {
        let response = app
            .http
            .post(&replay)
            .bearer_auth(&operator)
            .json(&json!({"all": true, "older_than_secs": secs}))
            .send()
            .await
            .expect("send");
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
    let report: Value = app
        .http
        .post(&replay)
        .bearer_auth(&operator)
        .json(&json!({"all": true, "older_than_secs": 315_360_000}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (report["replayed"].clone(), report["kept"].clone()),
        (json!([]), json!(1)),
        "{report}"
    );
    assert_eq!(app.queue_depth("dead").await, 1);
    app.cleanup().await;
}
