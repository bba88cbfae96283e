//! The HTTP contract: validation, the error envelope, authentication and
//! scopes. Real PostgreSQL and RabbitMQ; no worker runs, so nothing changes a
//! payment after the API wrote it.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::cards;
use testkit::{assert_error, payment_body, with_field, Options, TestApp};

/// Rows in the tables a payment request writes: payments, outbox,
/// idempotency keys.
async fn rows_written(app: &TestApp) -> (i64, i64, i64) {
    (
        app.count("payments").await,
        app.count("outbox").await,
        app.count("idempotency_keys").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_rule_is_a_400_naming_its_param_and_writes_nothing() {
    let app = TestApp::api_only().await;
    let base = payment_body(cards::VISA);
    let many_keys: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases: Vec<(Value, &str)> = vec![
        (with_field(base.clone(), &["amount"], json!(0)), "amount"),
        (with_field(base.clone(), &["amount"], json!(-100)), "amount"),
        (
            with_field(base.clone(), &["amount"], json!(100_000_000)),
            "amount",
        ),
        (with_field(base.clone(), &["amount"], json!(15.5)), "amount"),
        (
            with_field(base.clone(), &["amount"], json!("15000")),
            "amount",
        ),
        (
            with_field(base.clone(), &["currency"], json!("US")),
            "currency",
        ),
        (
            with_field(base.clone(), &["currency"], json!("ABC")),
            "currency",
        ),
        (
            with_field(base.clone(), &["currency"], json!(840)),
            "currency",
        ),
        (
            with_field(
                base.clone(),
                &["payment_method", "type"],
                json!("bank_transfer"),
            ),
            "payment_method.type",
        ),
        (
            with_field(
                base.clone(),
                &["payment_method", "card", "token"],
                json!("4242424242424242"),
            ),
            "payment_method.card.token",
        ),
        (
            with_field(
                base.clone(),
                &["payment_method", "card", "token"],
                json!("tok_"),
            ),
            "payment_method.card.token",
        ),
        (
            with_field(
                base.clone(),
                &["payment_method", "card", "cvc"],
                json!("123"),
            ),
            "payment_method.card.cvc",
        ),
        (
            with_field(base.clone(), &["description"], json!("d".repeat(1001))),
            "description",
        ),
        (
            with_field(
                base.clone(),
                &["statement_descriptor"],
                json!("S".repeat(23)),
            ),
            "statement_descriptor",
        ),
        (
            with_field(base.clone(), &["statement_descriptor"], json!("BAD<CHARS>")),
            "statement_descriptor",
        ),
        (
            with_field(base.clone(), &["order_id"], json!("o".repeat(256))),
            "order_id",
        ),
        (
            with_field(base.clone(), &["customer_id"], json!("c".repeat(256))),
            "customer_id",
        ),
        (
            with_field(base.clone(), &["invoice_id"], json!("i".repeat(256))),
            "invoice_id",
        ),
        (
            with_field(base.clone(), &["metadata"], Value::Object(many_keys)),
            "metadata",
        ),
        (
            with_field(base.clone(), &["metadata"], json!({"k".repeat(41): "v"})),
            "metadata",
        ),
        (
            with_field(
                base.clone(),
                &["metadata"],
                json!({"note": "v".repeat(501)}),
            ),
            "metadata.note",
        ),
        (
            with_field(base.clone(), &["metadata"], json!({"count": 3})),
            "metadata.count",
        ),
        (
            with_field(
                base.clone(),
                &["customer"],
                json!({"email": "not-an-address"}),
            ),
            "customer.email",
        ),
        (
            with_field(
                base.clone(),
                &["billing_address"],
                json!({"country": "USA"}),
            ),
            "billing_address.country",
        ),
        (
            with_field(base.clone(), &["surprise"], json!(true)),
            "surprise",
        ),
        (
            with_field(base.clone(), &["capture"], json!("yes")),
            "capture",
        ),
    ];
    let mut missing_amount = base.clone();
    missing_amount
        .as_object_mut()
        .expect("object")
        .remove("amount");
    let mut missing_card = base.clone();
    missing_card["payment_method"]
        .as_object_mut()
        .expect("object")
        .remove("card");
    let cases = cases.into_iter().chain([
        (missing_amount, "amount"),
        (missing_card, "payment_method.card"),
    ]);

    for (body, param) in cases {
        let response = app.post_payment(&body).await;
        let error = assert_error(response, 400, "invalid_request_error", Some(param)).await;
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains("4242424242424242"),
            "rejected values are not echoed: {message}"
        );
    }
    assert_eq!(
        rows_written(&app).await,
        (0, 0, 0),
        "nothing written by any rejected request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_wrong_content_type_and_oversized_bodies_are_rejected_in_the_envelope() {
    let app = TestApp::api_only().await;
    let url = app.url("/v1/payments");
    let send = |body: Vec<u8>, content_type: &'static str| {
        app.http
            .post(&url)
            .bearer_auth(&app.key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let response = send(b"{\"amount\": 15000,".to_vec(), "application/json")
        .await
        .expect("send");
    let error = assert_error(response, 400, "invalid_request_error", None).await;
    assert_eq!(error["code"], "invalid_json");

    let response = send(b"{} trailing".to_vec(), "application/json")
        .await
        .expect("send");
    assert_error(response, 400, "invalid_request_error", None).await;

    let body = serde_json::to_vec(&payment_body(cards::VISA)).expect("json");
    let response = send(body.clone(), "text/plain").await.expect("send");
    assert_error(response, 415, "invalid_request_error", None).await;

    // A valid JSON document just over 64 KiB.
    let mut big = payment_body(cards::VISA);
    big["description"] = json!("x".repeat(65 * 1024));
    let response = send(serde_json::to_vec(&big).expect("json"), "application/json")
        .await
        .expect("send");
    assert_error(response, 413, "invalid_request_error", None).await;

    // Content-Type with parameters is still JSON.
    let response = send(body, "application/json; charset=utf-8")
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    assert_eq!(
        rows_written(&app).await.0,
        1,
        "only the valid request wrote a payment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_key_get_401_and_wrong_scopes_get_403() {
    let app = TestApp::api_only().await;
    let url = app.url("/v1/payments");
    let body = payment_body(cards::VISA);

    let response = app.http.post(&url).json(&body).send().await.expect("send");
    assert_error(response, 401, "authentication_error", None).await;

    let response = app
        .post_as("sk_not_a_real_key", "/v1/payments", &body)
        .await;
    assert_error(response, 401, "authentication_error", None).await;

    let response = app
        .http
        .post(&url)
        .header("authorization", "Basic Zm9vOmJhcg==")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_error(response, 401, "authentication_error", None).await;

    // The scheme is case-insensitive (RFC 9110): `bearer` and `BEARER`
    // are `Bearer`; an empty key after it is still a 401.
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let response = app
            .http
            .post(&url)
            .header("authorization", format!("{scheme} {}", app.key))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 202, "{scheme}");
    }
    let response = app
        .http
        .post(&url)
        .header("authorization", "bearer ")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_error(response, 401, "authentication_error", None).await;

    let read_only = app.key_for("default", &["payments:read"]).await;
    let response = app.post_as(&read_only, "/v1/payments", &body).await;
    assert_error(response, 403, "permission_error", None).await;

    let id = app.create_payment(cards::VISA).await;
    let write_only = app.key_for("default", &["payments:write"]).await;
    let response = app.get_as(&write_only, &format!("/v1/payments/{id}")).await;
    assert_error(response, 403, "permission_error", None).await;

    let response = app.get_as(&read_only, &format!("/v1/payments/{id}")).await;
    assert_eq!(response.status(), 200, "payments:read may read");

    // A revoked key stops working at once.
    let revocable = app.key_for("default", &["payments:read"]).await;
    let key_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM api_keys ORDER BY created_at DESC LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .expect("key id");
    assert!(common::db::api_keys::revoke(&app.pool, key_id)
        .await
        .expect("revoke"));
    let response = app.get_as(&revocable, &format!("/v1/payments/{id}")).await;
    assert_error(response, 401, "authentication_error", None).await;

    assert_eq!(
        rows_written(&app).await.0,
        4,
        "rejected requests wrote nothing (the three spellings of `bearer` and one payment did)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_never_sees_another_merchants_payment() {
    let app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    let other = app
        .key_for("acme", &["payments:read", "payments:write"])
        .await;
    let response = app.get_as(&other, &format!("/v1/payments/{id}")).await;
    let error = assert_error(response, 404, "not_found", None).await;
    assert_eq!(error["code"], "resource_missing");
    // Same answer as for an id that does not exist at all, or a malformed one.
    for missing in [
        "pay_01234567-89ab-7def-8123-456789abcdef",
        "pay_nope",
        "nope",
    ] {
        let response = app
            .get_as(&app.key, &format!("/v1/payments/{missing}"))
            .await;
        assert_error(response, 404, "not_found", None).await;
    }
    // The owner still sees it.
    assert_eq!(app.payment(&id).await["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_in_the_envelope_and_health_endpoints_answer() {
    let app = TestApp::api_only().await;
    let response = app
        .http
        .get(app.url("/v2/nothing"))
        .send()
        .await
        .expect("send");
    assert_error(response, 404, "not_found", None).await;
    let response = app
        .request(Method::DELETE, "/v1/payments")
        .send()
        .await
        .expect("send");
    assert_error(response, 405, "invalid_request_error", None).await;

    let health = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("request-id"));
    let ready = app.http.get(app.url("/readyz")).send().await.expect("send");
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(
        ready,
        json!({
            "status": "ok",
            "database": "ok",
            "broker": "ok",
            "broker_node": testkit::amqp_addr().to_string(),
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_payment_is_202_pending_with_location_and_the_full_object() {
    let app = TestApp::api_only().await;
    let response = app.post_payment(&payment_body(cards::VISA)).await;
    assert_eq!(response.status(), 202);
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("Location header");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["object"], "payment");
    assert_eq!(
        location,
        format!(
            "{}/v1/payments/{}",
            app.api_url,
            body["id"].as_str().expect("id")
        )
    );
    // Unknown card details are null, never absent.
    let card = &body["payment_method"]["card"];
    for field in [
        "last4",
        "brand",
        "exp_month",
        "exp_year",
        "fingerprint",
        "country",
        "funding",
    ] {
        assert!(
            card.get(field).is_some_and(Value::is_null),
            "card.{field} is null: {card}"
        );
    }
    // The message is on the queue and the outbox row is gone once confirmed.
    let depth = app
        .eventually(
            "the message on the queue",
            std::time::Duration::from_secs(10),
            || async {
                let depth = app.queue_depth("process").await;
                (depth == 1).then_some(depth)
            },
        )
        .await;
    assert_eq!(depth, 1);
    app.eventually(
        "the outbox row deleted",
        std::time::Duration::from_secs(10),
        || async { (rows_written(&app).await.1 == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_api_answers_requests_in_flight_and_then_refuses_new_ones() {
    let mut app = TestApp::api_only().await;
    // No worker runs, so this request would wait its full 20 s.
    let waiting = app
        .request(Method::POST, "/v1/payments")
        .header("Prefer", "wait=20")
        .json(&payment_body(cards::VISA));
    let waiting = tokio::spawn(waiting.send());
    app.eventually(
        "the request to be in flight",
        std::time::Duration::from_secs(10),
        || async { (rows_written(&app).await.0 == 1).then_some(()) },
    )
    .await;
    let started = std::time::Instant::now();
    let url = app.api_url.clone();
    app.stop_api().await;
    let response = waiting
        .await
        .expect("join")
        .expect("the in-flight request was answered");
    assert_eq!(response.status(), 202, "answered with the current state");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "not held for the whole wait"
    );
    let refused = app.http.get(format!("{url}/healthz")).send().await;
    assert!(refused.is_err(), "a stopped API accepts no connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_body_is_cut_off_with_408_and_nothing_is_written() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::with(Options {
        request_timeout: std::time::Duration::from_secs(2),
        ..Options::api_only()
    })
    .await;
    let addr = app.api_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/payments HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"amount\": 1",
        app.key
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // ...and never the rest.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}}") {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server answered instead of waiting forever"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("request_timeout") && answer.to_ascii_lowercase().contains("request-id"),
        "{answer}"
    );
    assert_eq!(rows_written(&app).await, (0, 0, 0));
}
