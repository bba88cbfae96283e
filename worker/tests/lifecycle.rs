//! The rest of a payment's life (DESIGN.md section 9): authorize and
//! capture, cancel and void, refund, expand. Real PostgreSQL, RabbitMQ and
//! processor-sim; faults caused for real.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{payment_body, Options, TestApp};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker");

async fn post(
    app: &TestApp,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = app
        .http
        .post(format!("{}{path}", app.api_url))
        .bearer_auth(&app.key)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("send");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .get(format!("{}{path}", app.api_url))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("send");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

/// A payment that succeeded, captured or only authorized.
async fn succeeded(app: &TestApp, token: &str, amount: i64, capture: bool) -> String {
    let mut body = payment_body(token);
    body["amount"] = json!(amount);
    body["capture"] = json!(capture);
    let (status, payment) = post(app, "/v1/payments", body, &[("Prefer", "wait=20")]).await;
    assert_eq!(status, StatusCode::OK, "{payment}");
    assert_eq!(payment["status"], "succeeded", "{payment}");
    payment["id"].as_str().expect("id").to_owned()
}

async fn wait_payment(
    app: &TestApp,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    app.eventually(what, Duration::from_secs(30), || async {
        let payment = app.payment(id).await;
        check(&payment).then_some(payment)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_is_captured_in_part_and_the_rest_released() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, "tok_visa", 10_000, false).await;
    let authorized = app.payment(&id).await;
    assert_eq!(authorized["captured"], false);
    assert_eq!(authorized["amount_capturable"], 10_000);
    assert_eq!(authorized["amount_captured"], 0);

    let (status, body) = post(
        &app,
        &format!("/v1/payments/{id}/capture"),
        json!({"amount": 6_000}),
        &[("Prefer", "wait=20")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["captured"], true, "{body}");
    assert_eq!(body["amount_captured"], 6_000);
    assert_eq!(body["amount_capturable"], 0, "the rest is released");
    assert!(body["captured_at"].as_str().is_some());
    assert_eq!(body["capture_details"]["captured_amount"], 6_000);
    assert!(body["capture_details"]["processor_capture_id"]
        .as_str()
        .is_some_and(|c| c.starts_with("cap_")));

    let (status, again) = post(&app, &format!("/v1/payments/{id}/capture"), json!({}), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again}");
    assert_eq!(again["error"]["code"], "payment_not_capturable");

    let auto = succeeded(&app, "tok_visa", 5_000, true).await;
    let (status, body) = post(
        &app,
        &format!("/v1/payments/{auto}/capture"),
        json!({}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "payment_not_capturable");

    let other = succeeded(&app, "tok_visa", 5_000, false).await;
    let (status, body) = post(
        &app,
        &format!("/v1/payments/{other}/capture"),
        json!({"amount": 5_001}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "amount");
    let stats = app.sim_stats().await;
    assert_eq!(stats.captures, 1, "{stats:?}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_cancelled_before_processing_is_never_charged_though_its_job_was_queued() {
    let mut app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let id = app.create_payment("tok_visa").await;
    app.eventually("its job queued", Duration::from_secs(10), || async {
        (app.queue_depth("process").await == 1).then_some(())
    })
    .await;
    let (status, body) = post(
        &app,
        &format!("/v1/payments/{id}/cancel"),
        json!({"reason": "abandoned"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["cancellation_reason"], "abandoned");
    assert!(body["cancelled_at"].as_str().is_some());

    app.start_worker().await;
    app.eventually("the job consumed", Duration::from_secs(10), || async {
        (app.queue_depth("process").await == 0).then_some(())
    })
    .await;
    // Give the worker time to act on it, then check it did nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.payment(&id).await["status"], "cancelled");
    assert_eq!(
        app.sim_stats().await.requests,
        0,
        "never sent to the processor"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_is_voided_and_captured_failed_and_busy_payments_are_refused() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, "tok_visa", 7_000, false).await;
    let (status, body) = post(
        &app,
        &format!("/v1/payments/{id}/cancel"),
        json!({"reason": "requested_by_customer"}),
        &[("Prefer", "wait=20")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let voided = wait_payment(&app, &id, "cancelled", |p| p["status"] == "cancelled").await;
    assert_eq!(voided["amount_capturable"], 0);
    assert_eq!(voided["cancellation_reason"], "requested_by_customer");
    assert_eq!(app.sim_stats().await.voids, 1);

    let captured = succeeded(&app, "tok_visa", 1_000, true).await;
    let (status, body) = post(
        &app,
        &format!("/v1/payments/{captured}/cancel"),
        json!({}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "payment_not_cancellable");

    let (status, body) = post(&app, &format!("/v1/payments/{id}/cancel"), json!({}), &[]).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a cancelled payment: {body}"
    );

    let (status, body) = post(
        &app,
        &format!("/v1/payments/{captured}/cancel"),
        json!({"reason": "bored"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "reason");

    app.set_faults(json!({"latency_ms": 3000})).await;
    let busy = app.create_payment("tok_visa").await;
    app.eventually("processing", Duration::from_secs(10), || async {
        (app.payment(&busy).await["status"] == "processing").then_some(())
    })
    .await;
    let (status, body) = post(&app, &format!("/v1/payments/{busy}/cancel"), json!({}), &[]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "payment_processing");
    app.set_faults(json!({"latency_ms": 0})).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_in_part_and_in_full_follow_pending_to_succeeded_and_are_listed() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, "tok_visa", 10_000, true).await;
    let (status, body) = post(
        &app,
        &format!("/v1/payments/{id}/refund"),
        json!({"amount": 1_000}),
        &[],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "reason is required: {body}"
    );
    assert_eq!(body["error"]["param"], "reason");

    let (status, first) = post(
        &app,
        &format!("/v1/payments/{id}/refund"),
        json!({"amount": 3_000, "reason": "requested_by_customer", "notes": "size", "metadata": {"ticket": "42"}}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["object"], "refund");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["payment_id"], id);
    let refund_id = first["id"].as_str().expect("id").to_owned();
    assert!(refund_id.starts_with("ref_"));
    let done = app
        .eventually("the refund succeeded", Duration::from_secs(20), || async {
            let (_, refund) = get(&app, &format!("/v1/refunds/{refund_id}")).await;
            (refund["status"] == "succeeded").then_some(refund)
        })
        .await;
    assert!(done["processor_refund_id"]
        .as_str()
        .is_some_and(|r| r.starts_with("re_")));
    assert!(done["processed_at"].as_str().is_some());
    assert_eq!(done["metadata"]["ticket"], "42");

    // The rest, waited for; then nothing is left.
    let (status, rest) = post(
        &app,
        &format!("/v1/payments/{id}/refund"),
        json!({"reason": "other"}),
        &[("Prefer", "wait=20")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(rest["amount"], 7_000);
    assert_eq!(rest["status"], "succeeded");
    let payment = app.payment(&id).await;
    assert_eq!(payment["amount_refunded"], 10_000);
    assert_eq!(payment["refunded"], true);
    assert_eq!(payment["refunds"]["data"].as_array().map(Vec::len), Some(2));
    let (status, body) = post(
        &app,
        &format!("/v1/payments/{id}/refund"),
        json!({"amount": 1, "reason": "other"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "amount_exceeds_refundable");

    let (status, list) = get(&app, &format!("/v1/refunds?payment_id={id}&limit=1")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["has_more"], true);
    assert_eq!(list["data"][0]["amount"], 7_000, "newest first");
    let (_, next) = get(
        &app,
        &format!(
            "/v1/refunds?payment_id={id}&limit=1&starting_after={}",
            list["data"][0]["id"].as_str().unwrap_or_default()
        ),
    )
    .await;
    assert_eq!(next["data"][0]["id"], refund_id);
    assert_eq!(next["has_more"], false);

    let (status, expanded) = get(
        &app,
        &format!("/v1/payments/{id}?expand[]=refunds&expand[]=customer"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{expanded}");
    assert_eq!(
        expanded["refunds"]["data"].as_array().map(Vec::len),
        Some(2)
    );
    let (status, bad) = get(&app, &format!("/v1/payments/{id}?expand[]=merchant")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["error"]["param"], "expand[]");

    let receipt = app
        .http
        .get(format!("{}/receipts/{id}", app.api_url))
        .send()
        .await
        .expect("receipt")
        .text()
        .await
        .expect("html");
    assert!(
        receipt.contains("Refunded"),
        "the receipt shows the refunds: {receipt}"
    );

    let uncaptured = succeeded(&app, "tok_visa", 1_000, false).await;
    let (status, body) = post(
        &app,
        &format!("/v1/payments/{uncaptured}/refund"),
        json!({"reason": "other"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "payment_not_refundable");

    let stats = app.sim_stats().await;
    assert_eq!(stats.refunds, 2, "{stats:?}");
    assert_eq!(stats.over_refunds, 0);
    assert_eq!(stats.duplicate_refunds, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_concurrent_refunds_never_refund_more_than_was_captured() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, "tok_visa", 10_000, true).await;
    let requests = (0..12).map(|_| {
        let http = app.http.clone();
        let url = format!("{}/v1/payments/{id}/refund", app.api_url);
        let key = app.key.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({"amount": 1_000, "reason": "duplicate"}))
                .send()
                .await
                .expect("send")
                .status()
        })
    });
    let mut accepted = 0;
    for request in requests {
        let status = request.await.expect("join");
        match status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::BAD_REQUEST => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 10, "exactly what was captured");
    let stored: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(amount), 0)::bigint FROM operations WHERE kind = 'refund'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("sum");
    assert_eq!(stored, 10_000);
    app.eventually("every refund done", Duration::from_secs(30), || async {
        (app.sim_stats().await.refunds == 10).then_some(())
    })
    .await;
    let stats = app.sim_stats().await;
    assert_eq!(stats.over_refunds, 0, "{stats:?}");
    assert_eq!(stats.duplicate_refunds, 0, "{stats:?}");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_refund_fails_and_frees_its_amount() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, "tok_refundFails", 5_000, true).await;
    let (status, refund) = post(
        &app,
        &format!("/v1/payments/{id}/refund"),
        json!({"reason": "defective"}),
        &[("Prefer", "wait=20")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refund}");
    assert_eq!(refund["status"], "failed", "{refund}");
    assert!(refund["failure_code"].as_str().is_some());
    let payment = app.payment(&id).await;
    assert_eq!(payment["amount_refunded"], 0, "the amount is free again");
    assert_eq!(payment["refunded"], false);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_under_processor_errors_and_timeouts_happens_once() {
    let mut worker = testkit::fast_worker_settings();
    worker.max_attempts = 30;
    let app = TestApp::with(Options {
        worker,
        ..Options::default()
    })
    .await;
    let id = succeeded(&app, "tok_visa", 5_000, true).await;
    app.set_faults(json!({"error_rate": 0.5, "timeout_rate": 0.3}))
        .await;
    let (status, refund) = post(
        &app,
        &format!("/v1/payments/{id}/refund"),
        json!({"reason": "other"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    let refund_id = refund["id"].as_str().expect("id").to_owned();
    app.eventually("the refund succeeded", Duration::from_secs(60), || async {
        let (_, refund) = get(&app, &format!("/v1/refunds/{refund_id}")).await;
        (refund["status"] == "succeeded").then_some(())
    })
    .await;
    let stats = app.sim_stats().await;
    assert_eq!(stats.refunds, 1, "{stats:?}");
    assert_eq!(stats.duplicate_refunds, 0, "{stats:?}");
    app.set_faults(json!({"error_rate": 0.0, "timeout_rate": 0.0}))
        .await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_capture_and_mid_refund_does_each_exactly_once() {
    // Calls slower than a blink but well within the processor timeout.
    let mut worker = testkit::fast_worker_settings();
    worker.processor_timeout = Duration::from_secs(4);
    worker.lease = Duration::from_secs(20);
    let app = TestApp::with(Options {
        workers: 0,
        worker,
        ..Options::default()
    })
    .await;
    let mut first = app.worker_command(WORKER_BIN).spawn().expect("spawn");
    let authorized = succeeded(&app, "tok_visa", 8_000, false).await;
    let captured = succeeded(&app, "tok_visa", 9_000, true).await;
    app.set_faults(json!({"latency_ms": 1500})).await;
    let (status, _) = post(
        &app,
        &format!("/v1/payments/{authorized}/capture"),
        json!({}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, refund) = post(
        &app,
        &format!("/v1/payments/{captured}/refund"),
        json!({"reason": "other"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.eventually("both calls in flight", Duration::from_secs(10), || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM operations WHERE status = 'processing'")
                .fetch_one(&app.pool)
                .await
                .expect("count");
        (n == 2).then_some(())
    })
    .await;
    testkit::sigkill(&first);
    first.wait().await.expect("reaped");
    let mut second = app.worker_command(WORKER_BIN).spawn().expect("spawn");
    wait_payment(&app, &authorized, "captured", |p| p["captured"] == true).await;
    let refund_id = refund["id"].as_str().expect("id").to_owned();
    app.eventually("the refund succeeded", Duration::from_secs(30), || async {
        let (_, refund) = get(&app, &format!("/v1/refunds/{refund_id}")).await;
        (refund["status"] == "succeeded").then_some(())
    })
    .await;
    let stats = app.sim_stats().await;
    assert_eq!(stats.captures, 1, "{stats:?}");
    assert_eq!(stats.refunds, 1, "{stats:?}");
    assert_eq!(stats.duplicate_refunds, 0, "{stats:?}");
    testkit::sigterm(&second);
    assert!(second.wait().await.expect("exit").success());
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_left_uncaptured_past_its_ttl_is_voided_by_the_system() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, "tok_visa", 4_000, false).await;
    // 169 hours ago, past the default 168.
    sqlx::query("UPDATE payments SET finished_at = now() - interval '169 hours'")
        .execute(&app.pool)
        .await
        .expect("age it");
    let voided = wait_payment(&app, &id, "voided", |p| p["status"] == "cancelled").await;
    assert_eq!(voided["cancellation_reason"], "automatic");
    assert_eq!(app.sim_stats().await.voids, 1);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_refund_with_one_idempotency_key_refunds_once() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, "tok_visa", 5_000, true).await;
    let path = format!("/v1/payments/{id}/refund");
    let body = json!({"amount": 1_000, "reason": "other"});
    let (first_status, first) =
        post(&app, &path, body.clone(), &[("Idempotency-Key", "r-1")]).await;
    let (second_status, second) = post(&app, &path, body, &[("Idempotency-Key", "r-1")]).await;
    assert_eq!(first_status, StatusCode::ACCEPTED);
    assert_eq!(second_status, StatusCode::ACCEPTED);
    assert_eq!(first["id"], second["id"], "the same refund");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM operations")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(n, 1);
    app.cleanup().await;
}
