//! The rest of a payment's life (DESIGN.md section 9): authorize and
//! capture, cancel and void, refund, expand. Real PostgreSQL, RabbitMQ and
//! processor-sim; faults caused for real.

use std::time::Duration;

use common::processor::SimStats;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::cards;
use testkit::{payment_of, Options, TestApp};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker");

/// Worker settings whose calls may be slower than a blink (a latency
/// fault) but stay well within the processor timeout.
fn slow_call_settings() -> worker::Settings {
    let mut worker = testkit::fast_worker_settings();
    worker.processor_timeout = Duration::from_secs(4);
    worker.lease = Duration::from_secs(20);
    worker
}

/// A payment that succeeded, captured or only authorized.
async fn succeeded(app: &TestApp, token: &str, amount: i64, capture: bool) -> String {
    let body = payment_of(token, amount, capture);
    let (status, payment) = app
        .post_with("/v1/payments", body, &[("Prefer", "wait=20")])
        .await;
    assert_eq!(status, StatusCode::OK, "{payment}");
    assert_eq!(payment["status"], "succeeded", "{payment}");
    payment["id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_is_captured_in_part_and_the_rest_released() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 10_000, false).await;
    let authorized = app.payment(&id).await;
    assert_eq!(authorized["captured"], false);
    assert_eq!(authorized["amount_capturable"], 10_000);
    assert_eq!(authorized["amount_captured"], 0);

    let (status, body) = app
        .post_with(
            &format!("/v1/payments/{id}/capture"),
            json!({"amount": 6_000, "statement_descriptor": "ACME SHIPPED",
                   "metadata": {"shipment": "s-1"}}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["captured"], true, "{body}");
    // What the capture was sent with is applied, not dropped.
    assert_eq!(body["statement_descriptor"], "ACME SHIPPED", "{body}");
    assert_eq!(body["metadata"]["shipment"], "s-1", "{body}");
    let read = app.payment(&id).await;
    assert_eq!(read["metadata"]["shipment"], "s-1");
    assert_eq!(
        testkit::http::key_order(&body),
        testkit::http::key_order(&read),
        "a capture's answer is the payment, keys in GET's order"
    );
    assert_eq!(body["amount_captured"], 6_000);
    assert_eq!(body["amount_capturable"], 0, "the rest is released");
    assert!(body["captured_at"].as_str().is_some());
    assert_eq!(body["capture_details"]["captured_amount"], 6_000);
    assert!(body["capture_details"]["processor_capture_id"]
        .as_str()
        .is_some_and(|c| c.starts_with("cap_")));

    let (status, again) = app
        .post(&format!("/v1/payments/{id}/capture"), json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again}");
    assert_eq!(again["error"]["code"], "payment_not_capturable");

    let auto = succeeded(&app, cards::VISA, 5_000, true).await;
    let (status, body) = app
        .post(&format!("/v1/payments/{auto}/capture"), json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "payment_not_capturable");

    let other = succeeded(&app, cards::VISA, 5_000, false).await;
    let (status, body) = app
        .post(
            &format!("/v1/payments/{other}/capture"),
            json!({"amount": 5_001}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "amount");
    let stats = app.sim_stats().await;
    assert_eq!(stats.captures, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_cancelled_before_processing_is_never_charged_though_its_job_was_queued() {
    let mut app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    app.wait_queue_depth("process", 1).await;
    let (status, body) = app
        .post(
            &format!("/v1/payments/{id}/cancel"),
            json!({"reason": "abandoned"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["cancellation_reason"], "abandoned");
    assert!(body["cancelled_at"].as_str().is_some());

    app.start_worker().await;
    app.wait_queue_depth("process", 0).await;
    // Give the worker time to act on it, then check it did nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.payment(&id).await["status"], "cancelled");
    assert_eq!(
        app.sim_stats().await.requests,
        0,
        "never sent to the processor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_is_voided_and_captured_failed_and_busy_payments_are_refused() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 7_000, false).await;
    let (status, body) = app
        .post_with(
            &format!("/v1/payments/{id}/cancel"),
            json!({"reason": "requested_by_customer"}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let voided = app
        .wait_payment(&id, "cancelled", |p| p["status"] == "cancelled")
        .await;
    assert_eq!(voided["amount_capturable"], 0);
    assert_eq!(voided["cancellation_reason"], "requested_by_customer");
    assert_eq!(app.sim_stats().await.voids, 1);

    let captured = succeeded(&app, cards::VISA, 1_000, true).await;
    let (status, body) = app
        .post(&format!("/v1/payments/{captured}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "payment_not_cancellable");

    let (status, body) = app
        .post(&format!("/v1/payments/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a cancelled payment: {body}"
    );

    let (status, body) = app
        .post(
            &format!("/v1/payments/{captured}/cancel"),
            json!({"reason": "bored"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["param"], "reason");

    app.set_faults(json!({"latency_ms": 3000})).await;
    let busy = app.create_payment(cards::VISA).await;
    app.eventually("processing", Duration::from_secs(10), || async {
        (app.payment(&busy).await["status"] == "processing").then_some(())
    })
    .await;
    let (status, body) = app
        .post(&format!("/v1/payments/{busy}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "payment_processing");
    app.set_faults(json!({"latency_ms": 0})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_in_part_and_in_full_follow_pending_to_succeeded_and_are_listed() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 10_000, true).await;
    let (status, body) = app
        .post(
            &format!("/v1/payments/{id}/refund"),
            json!({"amount": 1_000}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "reason is required: {body}"
    );
    assert_eq!(body["error"]["param"], "reason");

    let (status, first) = app.post(&format!("/v1/payments/{id}/refund"),
        json!({"amount": 3_000, "reason": "requested_by_customer", "notes": "size", "metadata": {"ticket": "42"}}))
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["object"], "refund");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["payment_id"], id);
    let refund_id = first["id"].as_str().expect("id").to_owned();
    assert!(refund_id.starts_with("ref_"));
    let done = app
        .eventually("the refund succeeded", Duration::from_secs(20), || async {
            let (_, refund) = app.get(&format!("/v1/refunds/{refund_id}")).await;
            (refund["status"] == "succeeded").then_some(refund)
        })
        .await;
    assert!(done["processor_refund_id"]
        .as_str()
        .is_some_and(|r| r.starts_with("re_")));
    assert!(done["processed_at"].as_str().is_some());
    assert_eq!(done["metadata"]["ticket"], "42");

    // The rest, waited for; then nothing is left.
    let (status, rest) = app
        .post_with(
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
    let (status, body) = app
        .post(
            &format!("/v1/payments/{id}/refund"),
            json!({"amount": 1, "reason": "other"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "amount_exceeds_refundable");

    let (status, list) = app
        .get(&format!("/v1/refunds?payment_id={id}&limit=1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["has_more"], true);
    assert_eq!(list["data"][0]["amount"], 7_000, "newest first");
    let (_, next) = app
        .get(&format!(
            "/v1/refunds?payment_id={id}&limit=1&starting_after={}",
            list["data"][0]["id"].as_str().unwrap_or_default()
        ))
        .await;
    assert_eq!(next["data"][0]["id"], refund_id);
    assert_eq!(next["has_more"], false);
    // A cursor that is no refund of this payment pages nothing: it is a
    // `400` naming it, not an empty page; one that is no refund id at all
    // likewise, with its own code.
    let elsewhere = format!("ref_{}", uuid::Uuid::now_v7());
    for (cursor, code) in [
        (elsewhere.as_str(), "resource_missing"),
        ("ref_nope", "invalid_parameter"),
        (id.as_str(), "invalid_parameter"),
    ] {
        let (status, body) = app
            .get(&format!(
                "/v1/refunds?payment_id={id}&starting_after={cursor}"
            ))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{cursor}: {body}");
        assert_eq!(body["error"]["param"], "starting_after", "{body}");
        assert_eq!(body["error"]["code"], code, "{cursor}: {body}");
    }

    let (status, expanded) = app
        .get(&format!(
            "/v1/payments/{id}?expand[]=refunds&expand[]=customer"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{expanded}");
    assert_eq!(
        expanded["refunds"]["data"].as_array().map(Vec::len),
        Some(2)
    );
    let (status, bad) = app
        .get(&format!("/v1/payments/{id}?expand[]=merchant"))
        .await;
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

    let uncaptured = succeeded(&app, cards::VISA, 1_000, false).await;
    let (status, body) = app
        .post(
            &format!("/v1/payments/{uncaptured}/refund"),
            json!({"reason": "other"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "payment_not_refundable");

    let stats = app.sim_stats().await;
    assert_eq!(stats.refunds, 2, "{stats:?}");
    assert_eq!(stats.over_refunds, 0);
    assert_eq!(stats.duplicate_refunds, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_concurrent_refunds_never_refund_more_than_was_captured() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 10_000, true).await;
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
}

/// Issue 18, item 1: a refusal is explained from the transaction that
/// locked the payment, never through a second pool connection, so a storm
/// of refused requests on one payment (far more than the API's 8 database
/// connections) cannot starve the pool: every refusal is `400`, and another
/// merchant's reads answer as usual meanwhile. Before, the refusals queued
/// on the row lock held every connection while the lock holder waited for
/// one more: `503 database_unavailable` after the pool's acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_refused_refunds_and_captures_never_starves_another_merchants_reads() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 10_000, true).await;
    request_refund(&app, &id, json!({"reason": "duplicate"})).await;
    let other = app
        .key_for("another merchant", &["payments:read", "payments:write"])
        .await;
    let theirs = app
        .create_payment_as(&other, &testkit::payment_body(cards::VISA))
        .await;

    let storm = (0..64).map(|i| {
        let http = app.http.clone();
        let (action, body) = if i % 2 == 0 {
            ("refund", json!({"amount": 1_000, "reason": "duplicate"}))
        } else {
            ("capture", json!({"amount": 1_000}))
        };
        let url = format!("{}/v1/payments/{id}/{action}", app.api_url);
        let key = app.key.clone();
        tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("send");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            (status, body)
        })
    });
    let storm: Vec<_> = storm.collect();
    let reads = (0..16).map(|_| {
        let http = app.http.clone();
        let url = format!("{}/v1/payments/{theirs}", app.api_url);
        let key = other.clone();
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(key)
                .send()
                .await
                .expect("send")
                .status()
        })
    });
    let reads: Vec<_> = reads.collect();
    for request in storm {
        let (status, body) = request.await.expect("join");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            code == "payment_not_capturable" || code == "amount_exceeds_refundable",
            "{body}"
        );
    }
    for read in reads {
        assert_eq!(read.await.expect("join"), StatusCode::OK);
    }
    let refunds: i64 = sqlx::query_scalar("SELECT count(*) FROM operations WHERE kind = 'refund'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(refunds, 1, "the refused requests wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_refund_fails_and_frees_its_amount() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::REFUND_FAILS, 5_000, true).await;
    let (status, refund) = app
        .post_with(
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_under_processor_errors_and_timeouts_happens_once() {
    let app = TestApp::with(Options::max_attempts(30)).await;
    let id = succeeded(&app, cards::VISA, 5_000, true).await;
    app.set_faults(json!({"error_rate": 0.5, "timeout_rate": 0.3}))
        .await;
    let refund_id = request_refund(&app, &id, json!({"reason": "other"})).await;
    wait_refund_within(&app, &refund_id, "succeeded", Duration::from_secs(60)).await;
    let stats = app.sim_stats().await;
    assert_eq!(stats.refunds, 1, "{stats:?}");
    assert_eq!(stats.duplicate_refunds, 0, "{stats:?}");
    app.set_faults(json!({"error_rate": 0.0, "timeout_rate": 0.0}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_capture_and_mid_refund_does_each_exactly_once() {
    let worker = slow_call_settings();
    let app = TestApp::with(Options {
        worker,
        ..Options::api_only()
    })
    .await;
    let mut first = app.worker_command(WORKER_BIN).spawn().expect("spawn");
    let authorized = succeeded(&app, cards::VISA, 8_000, false).await;
    let captured = succeeded(&app, cards::VISA, 9_000, true).await;
    app.set_faults(json!({"latency_ms": 1500})).await;
    let (status, _) = app
        .post(&format!("/v1/payments/{authorized}/capture"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let refund_id = request_refund(&app, &captured, json!({"reason": "other"})).await;
    app.wait_count_where(
        "both calls in flight",
        "operations",
        "status = 'processing'",
        2,
        Duration::from_secs(10),
    )
    .await;
    testkit::sigkill(&first);
    first.wait().await.expect("reaped");
    let mut second = app.worker_command(WORKER_BIN).spawn().expect("spawn");
    app.wait_payment(&authorized, "captured", |p| p["captured"] == true)
        .await;
    wait_refund(&app, &refund_id, "succeeded").await;
    let stats = app.sim_stats().await;
    assert_eq!(stats.captures, 1, "{stats:?}");
    assert_eq!(stats.refunds, 1, "{stats:?}");
    assert_eq!(stats.duplicate_refunds, 0, "{stats:?}");
    testkit::sigterm(&second);
    assert!(second.wait().await.expect("exit").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_left_uncaptured_past_its_ttl_is_voided_by_the_system() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 4_000, false).await;
    // 169 hours ago, past the default 168.
    sqlx::query("UPDATE payments SET finished_at = now() - interval '169 hours'")
        .execute(&app.pool)
        .await
        .expect("age it");
    let voided = app
        .wait_payment(&id, "voided", |p| p["status"] == "cancelled")
        .await;
    assert_eq!(voided["cancellation_reason"], "automatic");
    assert_eq!(app.sim_stats().await.voids, 1);
}

/// Voids the payment's authorization at the simulator itself, behind our
/// back: an issuer that expired or reversed it.
async fn void_at_the_processor(app: &TestApp, id: &str) {
    let charge: String = sqlx::query_scalar(
        "SELECT processor_response->>'charge_id' FROM payments WHERE id = $1::uuid",
    )
    .bind(id.trim_start_matches("pay_"))
    .fetch_one(&app.pool)
    .await
    .expect("the payment's charge id");
    let response = app
        .http
        .post(format!("{}/v1/charges/{charge}/void", app.sim_url))
        .header("Idempotency-Key", format!("issuer-{charge}"))
        .json(&json!({}))
        .send()
        .await
        .expect("void at the simulator");
    assert_eq!(response.status(), StatusCode::OK);
}

/// The events of `kind` this merchant has, newest first.
async fn events(app: &TestApp, kind: &str) -> Vec<Value> {
    let (status, list) = app.get(&format!("/v1/events?type={kind}")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["data"].as_array().expect("data").clone()
}

/// Checks the payment the processor no longer holds: cancelled, nothing
/// capturable, the failure on it, and nothing more can be done to it.
async fn assert_released(app: &TestApp, id: &str, kind: &str, code: &str) -> Value {
    let payment = app.payment(id).await;
    assert_eq!(payment["status"], "cancelled", "{payment}");
    assert_eq!(payment["captured"], false);
    assert_eq!(payment["amount_capturable"], 0);
    assert_eq!(payment["amount_captured"], 0);
    assert_eq!(payment["last_operation_error"]["type"], kind, "{payment}");
    assert_eq!(payment["last_operation_error"]["failure_code"], code);
    assert!(payment["last_operation_error"]["failure_message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    for action in ["capture", "cancel"] {
        let (status, body) = app
            .post(&format!("/v1/payments/{id}/{action}"), json!({}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action} again: {body}");
    }
    payment
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_the_processor_refuses_is_answered_as_a_failure_and_the_payment_tells_the_truth()
{
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 10_000, false).await;
    void_at_the_processor(&app, &id).await;
    let (status, body) = app
        .post_with(
            &format!("/v1/payments/{id}/capture"),
            json!({}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(body["error"]["type"], "processor_error");
    assert_eq!(body["error"]["code"], "capture_failed");
    assert_eq!(body["error"]["failure_code"], "charge_not_capturable");
    assert_eq!(
        body["error"]["payment"]["id"],
        id.as_str(),
        "names the payment"
    );
    assert_eq!(body["error"]["payment"]["amount_capturable"], 0);

    let payment = assert_released(&app, &id, "capture", "charge_not_capturable").await;
    assert_eq!(payment["cancellation_reason"], "automatic");
    let failed = events(&app, "payment.capture_failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["data"]["object"]["id"], id.as_str());
    assert_eq!(
        failed[0]["data"]["object"]["last_operation_error"]["failure_code"],
        "charge_not_capturable"
    );
    assert_eq!(events(&app, "payment.cancelled").await.len(), 1);

    // Past its TTL, nothing is left to void: no operation, no call.
    sqlx::query("UPDATE payments SET finished_at = now() - interval '169 hours'")
        .execute(&app.pool)
        .await
        .expect("age it");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = app.sim_stats().await;
    assert_eq!(stats.capture_requests, 1, "one capture sent: {stats:?}");
    assert_eq!(stats.void_requests, 1, "only the issuer's void: {stats:?}");
    assert_eq!(stats.captures, 0, "{stats:?}");
    assert_eq!(app.count("operations").await, 1, "the one capture");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_the_processor_refuses_is_answered_as_a_failure_and_the_payment_tells_the_truth() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 8_000, false).await;
    void_at_the_processor(&app, &id).await;
    let (status, body) = app
        .post_with(
            &format!("/v1/payments/{id}/cancel"),
            json!({"reason": "abandoned"}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(body["error"]["code"], "void_failed");
    assert_eq!(body["error"]["failure_code"], "charge_not_voidable");
    assert_eq!(body["error"]["payment"]["status"], "cancelled");

    let payment = assert_released(&app, &id, "void", "charge_not_voidable").await;
    assert_eq!(
        payment["cancellation_reason"], "abandoned",
        "the cancel's reason"
    );
    assert_eq!(events(&app, "payment.void_failed").await.len(), 1);
    let stats = app.sim_stats().await;
    assert_eq!(stats.void_requests, 2, "the issuer's and ours: {stats:?}");
    assert_eq!(stats.voids, 1, "only the issuer's: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_authorization_the_processor_already_released_is_voided_once_never_every_pass() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 4_000, false).await;
    void_at_the_processor(&app, &id).await;
    sqlx::query("UPDATE payments SET finished_at = now() - interval '169 hours'")
        .execute(&app.pool)
        .await
        .expect("age it");
    app.wait_payment(&id, "cancelled", |p| p["status"] == "cancelled")
        .await;
    // Several rescuer passes (every 500 ms here).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let payment = assert_released(&app, &id, "void", "charge_not_voidable").await;
    assert_eq!(payment["cancellation_reason"], "automatic");
    assert_eq!(
        app.count_where("operations", "kind = 'void' AND requested_by = 'system'")
            .await,
        1,
        "one automatic void"
    );
    let stats = app.sim_stats().await;
    assert_eq!(stats.void_requests, 2, "the issuer's and ours: {stats:?}");
    assert_eq!(events(&app, "payment.void_failed").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_shows_what_was_captured_refunds_by_status_and_the_settled_net() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 10_000, false).await;
    let (status, body) = app
        .post_with(
            &format!("/v1/payments/{id}/capture"),
            json!({"amount": 2_500}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, refund) = app
        .post_with(
            &format!("/v1/payments/{id}/refund"),
            json!({"amount": 500, "reason": "other"}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refund}");
    assert_eq!(refund["status"], "succeeded");
    // A second refund held at a slow processor: pending on the receipt.
    app.set_faults(json!({"latency_ms": 3000})).await;
    let pending = request_refund(&app, &id, json!({"amount": 1_000, "reason": "other"})).await;
    wait_refund_in_flight(&app, &pending).await;

    let page = app
        .http
        .get(app.url(&format!("/receipts/{id}")))
        .send()
        .await
        .expect("receipt")
        .text()
        .await
        .expect("page");
    let text: String = page.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains(r#"<p class="amount">25.00 USD</p>"#),
        "the headline is what the card was charged: {text}"
    );
    assert!(
        text.contains("<th>Authorized</th><td>100.00 USD</td>"),
        "{text}"
    );
    assert!(text.contains("<th>Refunded</th><td>5.00 USD on "), "{text}");
    assert!(
        text.contains("<th>Refund pending</th><td>10.00 USD on "),
        "{text}"
    );
    assert!(
        text.contains("<th>Net (refunds pending not deducted)</th><td>20.00 USD</td>"),
        "net of what is settled: {text}"
    );
    app.set_faults(json!({"latency_ms": 0})).await;
    wait_refund(&app, &pending, "succeeded").await;
}

/// A keyed `POST` to `path`: in flight (its operation's history row waits
/// on a lock the test holds, its key already claimed) the same key is
/// `409`; once answered the same key and body replay the first answer; the
/// same key with `other` is `422`. One operation is created in all.
async fn keyed_post_replays_refuses_another_body_and_an_in_flight_key(
    app: &TestApp,
    path: &str,
    body: Value,
    other: Value,
) {
    let key = format!("key-{path}");
    let send = |body: &Value| {
        app.request(reqwest::Method::POST, path)
            .header("Idempotency-Key", &key)
            .json(body)
            .send()
    };
    let before = app.count("operations").await;
    let keys_before = app.count("idempotency_keys").await;
    let blocker = app
        .hold_lock("LOCK TABLE operation_status_history IN EXCLUSIVE MODE")
        .await;
    let first = app
        .request(reqwest::Method::POST, path)
        .header("Idempotency-Key", &key)
        .json(&body);
    let first = tokio::spawn(async move { first.send().await.expect("first") });
    app.eventually(
        "the first to claim its key",
        Duration::from_secs(10),
        || async { (app.count("idempotency_keys").await == keys_before + 1).then_some(()) },
    )
    .await;
    let busy = send(&body).await.expect("send");
    assert_eq!(busy.status(), StatusCode::CONFLICT, "{path}");
    let error: Value = busy.json().await.expect("json");
    assert_eq!(error["error"]["code"], "idempotency_key_in_use", "{error}");
    blocker.rollback().await.expect("release");

    let first = first.await.expect("join");
    assert_eq!(first.status(), StatusCode::ACCEPTED, "{path}");
    let first: Value = first.json().await.expect("json");
    let replay = send(&body).await.expect("send");
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    assert!(replay.headers().get("idempotent-replayed").is_some());
    let replay: Value = replay.json().await.expect("json");
    assert_eq!(replay, first, "the first answer, replayed");

    let reused = send(&other).await.expect("send");
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
    let error: Value = reused.json().await.expect("json");
    assert_eq!(error["error"]["code"], "idempotency_key_reused", "{error}");
    assert_eq!(app.count("operations").await, before + 1, "one operation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_and_a_refund_replay_refuse_another_body_and_an_in_flight_key() {
    let app = TestApp::spawn().await;
    let authorized = succeeded(&app, cards::VISA, 9_000, false).await;
    keyed_post_replays_refuses_another_body_and_an_in_flight_key(
        &app,
        &format!("/v1/payments/{authorized}/capture"),
        json!({"amount": 4_000}),
        json!({"amount": 5_000}),
    )
    .await;
    let captured = succeeded(&app, cards::VISA, 9_000, true).await;
    keyed_post_replays_refuses_another_body_and_an_in_flight_key(
        &app,
        &format!("/v1/payments/{captured}/refund"),
        json!({"amount": 1_000, "reason": "other"}),
        json!({"amount": 2_000, "reason": "other"}),
    )
    .await;
    // Done once each at the processor.
    app.eventually(
        "the capture and the refund done",
        Duration::from_secs(20),
        || async {
            let stats = app.sim_stats().await;
            (stats.captures == 1 && stats.refunds == 1).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_whose_metadata_would_pass_the_limit_once_merged_is_a_400_naming_it() {
    let app = TestApp::spawn().await;
    let mut body = payment_of(cards::VISA, 3_000, false);
    let full: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
    body["metadata"] = Value::Object(full);
    let (status, payment) = app
        .post_with("/v1/payments", body, &[("Prefer", "wait=20")])
        .await;
    assert_eq!(status, StatusCode::OK, "{payment}");
    let id = payment["id"].as_str().expect("id");
    let capture = format!("/v1/payments/{id}/capture");
    let (status, error) = app.post(&capture, json!({"metadata": {"new": "x"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["param"], "metadata");
    assert_eq!(app.count("operations").await, 0, "nothing written");
    // Replacing a key the payment has keeps it within the limit.
    let (status, captured) = app
        .post_with(
            &capture,
            json!({"metadata": {"k0": "w"}}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(captured["metadata"]["k0"], "w");
    // A refund's metadata is its own, never merged: no such limit.
    let (status, refund) = app
        .post(
            &format!("/v1/payments/{id}/refund"),
            json!({"amount": 100, "reason": "other", "metadata": {"new": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_refund_with_one_idempotency_key_refunds_once() {
    let app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 5_000, true).await;
    let path = format!("/v1/payments/{id}/refund");
    let body = json!({"amount": 1_000, "reason": "other"});
    let send = || {
        app.request(reqwest::Method::POST, &path)
            .header("Idempotency-Key", "r-1")
            .json(&body)
            .send()
    };
    let first = send().await.expect("first refund");
    let second = send().await.expect("second refund");
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert!(second.headers().get("idempotent-replayed").is_some());
    // The first answer had no `Location`; its replay has none either (it
    // once pointed at `/v1/payments/ref_…`).
    assert!(first.headers().get("location").is_none());
    assert!(second.headers().get("location").is_none());
    let first: Value = first.json().await.expect("json");
    let second: Value = second.json().await.expect("json");
    assert_eq!(first["id"], second["id"], "the same refund");
    assert_eq!(app.count("operations").await, 1);
}

// ---- Operations under faults: poison messages, holds and replays, lost
// commits. Every fault is caused for real. ----

/// The operation behind a refund or capture id (`ref_…`), as stored.
#[derive(Debug, sqlx::FromRow)]
struct OperationState {
    status: String,
    held: bool,
    unknown: bool,
    attempts: i32,
    last_error: Option<String>,
    failure_code: Option<String>,
}

async fn operation(app: &TestApp, id: &str) -> OperationState {
    sqlx::query_as(
        "SELECT status, held_at IS NOT NULL AS held, outcome_unknown_since IS NOT NULL AS unknown,
                attempts, last_error, failure_code
         FROM operations WHERE id = $1::uuid",
    )
    .bind(id.trim_start_matches("ref_"))
    .fetch_one(&app.pool)
    .await
    .expect("the operation")
}

/// How many times the operation was ever `failed`, from its history.
async fn operation_times_failed(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM operation_status_history
         WHERE operation_id = $1::uuid AND to_status = 'failed'",
    )
    .bind(id.trim_start_matches("ref_"))
    .fetch_one(&app.pool)
    .await
    .expect("history")
}

/// The delivery count at which a worker treats a message as poison (the
/// worker's `POISON_REDELIVERIES`).
const POISON: i64 = common::queue::DELIVERY_LIMIT / 2;

/// Makes the one message of the main queue poison for real: takes it
/// without acking and closes the channel, as a worker that dies holding it
/// does, until the broker has counted `POISON` returns. Checks the broker's
/// own count at each turn, so the test fails if the broker stops counting.
async fn kill_holders_until_poison(app: &TestApp) {
    let broker = app.broker().await;
    let queue = broker.topology().process_queue();
    loop {
        let channel = broker.open_channel().await.expect("channel");
        let channel = &channel;
        let queue = &queue;
        let message = app
            .eventually(
                "the message in the queue",
                Duration::from_secs(10),
                || async move {
                    channel
                        .basic_get(queue, lapin::options::BasicGetOptions { no_ack: false })
                        .await
                        .expect("basic.get")
                },
            )
            .await;
        let count = common::queue::headers::get_int(
            message.delivery.properties.headers().as_ref(),
            "x-delivery-count",
        )
        .unwrap_or(0);
        // The holder dies: the broker takes the message back, unacked.
        channel.close(200, "holder died").await.expect("close");
        if count + 1 >= POISON {
            break;
        }
    }
    broker.close().await;
}

/// `worker dlq replay --all`, the real binary, whose summary line must
/// say `expected` (`1 replayed, 0 dropped, 0 left`).
async fn replay_with_the_cli(app: &TestApp, expected: &str) {
    let output = app
        .worker_command(WORKER_BIN)
        .args(["dlq", "replay", "--all"])
        .output()
        .await
        .expect("run worker dlq replay");
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "replay: {output:?}");
    assert!(summary.contains(expected), "{summary}");
}

/// `POST /v1/payments/<payment>/refund` with `body`, accepted: the refund's
/// id.
async fn request_refund(app: &TestApp, payment: &str, body: Value) -> String {
    let (status, refund) = app
        .post(&format!("/v1/payments/{payment}/refund"), body)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
    refund["id"].as_str().expect("id").to_owned()
}

/// Waits until the refund's processor call is in flight.
async fn wait_refund_in_flight(app: &TestApp, id: &str) {
    app.eventually(
        "the refund call in flight",
        Duration::from_secs(10),
        || async { (operation(app, id).await.status == "processing").then_some(()) },
    )
    .await;
}

/// The simulator refunded once, never twice, never more than was captured.
fn assert_refunded_once(stats: &SimStats) {
    assert_eq!(stats.refunds, 1, "{stats:?}");
    assert_eq!(stats.duplicate_refunds, 0, "{stats:?}");
    assert_eq!(stats.over_refunds, 0, "{stats:?}");
}

/// The refund as the API shows it once it has `status`, waited for up to
/// 30 s.
async fn wait_refund(app: &TestApp, id: &str, status: &str) -> Value {
    wait_refund_within(app, id, status, Duration::from_secs(30)).await
}

async fn wait_refund_within(app: &TestApp, id: &str, status: &str, timeout: Duration) -> Value {
    app.eventually(&format!("the refund {status}"), timeout, || async {
        let (_, refund) = app.get(&format!("/v1/refunds/{id}")).await;
        (refund["status"] == status).then_some(refund)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_refund_never_sent_fails_as_not_processed_frees_its_amount_and_a_replay_pays_it_once(
) {
    let mut app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 5_000, true).await;
    app.stop_workers().await;
    let refund_id = request_refund(&app, &id, json!({"amount": 2_000, "reason": "other"})).await;
    app.wait_queue_depth("process", 1).await;
    kill_holders_until_poison(&app).await;

    app.start_worker().await;
    let failed = wait_refund(&app, &refund_id, "failed").await;
    assert_eq!(failed["failure_code"], "not_processed", "{failed}");
    assert_eq!(
        app.payment(&id).await["amount_refunded"],
        0,
        "known never sent: its amount is free again"
    );
    assert_eq!(app.dead_reasons().await, ["redelivered_too_often"]);
    let stats = app.sim_stats().await;
    assert_eq!((stats.refunds, stats.lookups), (0, 0), "{stats:?}");

    // "It can be retried" is true: the operator's replay pays it, once.
    replay_with_the_cli(&app, "1 replayed, 0 dropped, 0 left").await;
    wait_refund(&app, &refund_id, "succeeded").await;
    assert_eq!(app.payment(&id).await["amount_refunded"], 2_000);
    assert_refunded_once(&app.sim_stats().await);
}

/// A refund failed as not processed frees its amount. If another refund
/// takes that amount meanwhile, the operator's replay of the first is
/// dropped, the guard of the replay statement finding the payment no
/// longer allows it: nothing is refunded past what was captured, and the
/// first stays failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_a_failed_refund_whose_amount_was_refunded_since_is_dropped_never_over_refunding(
) {
    let mut app = TestApp::spawn().await;
    let id = succeeded(&app, cards::VISA, 5_000, true).await;
    app.stop_workers().await;
    let refund_id = request_refund(&app, &id, json!({"amount": 2_000, "reason": "other"})).await;
    app.wait_queue_depth("process", 1).await;
    kill_holders_until_poison(&app).await;
    app.start_worker().await;
    wait_refund(&app, &refund_id, "failed").await;

    // The whole captured amount, refunded by another request.
    let second = request_refund(&app, &id, json!({"reason": "other"})).await;
    wait_refund(&app, &second, "succeeded").await;
    assert_eq!(app.payment(&id).await["amount_refunded"], 5_000);

    replay_with_the_cli(&app, "0 replayed, 1 dropped, 0 left").await;
    let first = wait_refund(&app, &refund_id, "failed").await;
    assert_eq!(first["failure_code"], "not_processed", "{first}");
    assert_eq!(
        app.payment(&id).await["amount_refunded"],
        5_000,
        "never refunded past what was captured"
    );
    assert_eq!(app.sim_stats().await.refunds, 1, "only the second was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_refund_whose_worker_died_mid_call_is_held_not_failed_and_a_replay_pays_it_once() {
    let worker = slow_call_settings();
    let mut app = TestApp::with(Options {
        worker,
        ..Options::api_only()
    })
    .await;
    let mut first = app.worker_command(WORKER_BIN).spawn().expect("spawn");
    let id = succeeded(&app, cards::VISA, 5_000, true).await;
    app.set_faults(json!({"latency_ms": 1500})).await;
    let refund_id = request_refund(&app, &id, json!({"amount": 3_000, "reason": "other"})).await;
    wait_refund_in_flight(&app, &refund_id).await;
    // The worker dies mid-call (the broker counts one return), and every
    // worker after it dies holding the message too.
    testkit::sigkill(&first);
    first.wait().await.expect("reaped");
    kill_holders_until_poison(&app).await;
    app.set_faults(json!({"latency_ms": 0})).await;
    // The dead worker's heartbeat goes stale: its claim is void.
    let dead_after = app.options.worker.dead_after.as_secs_f64();
    app.eventually(
        "the dead worker's claim void",
        Duration::from_secs(10),
        || async {
            let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM workers WHERE heartbeat_at > now() - make_interval(secs => $1)",
        )
        .bind(dead_after)
        .fetch_one(&app.pool)
        .await
        .expect("workers");
            (live == 0).then_some(())
        },
    )
    .await;

    app.start_worker().await;
    let held = app
        .eventually("the refund held", Duration::from_secs(20), || async {
            let op = operation(&app, &refund_id).await;
            op.held.then_some(op)
        })
        .await;
    assert_eq!(held.status, "pending", "{held:?}");
    assert!(held.unknown, "its outcome is marked unknown: {held:?}");
    assert!(
        held.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("held for an operator")),
        "{held:?}"
    );
    let (_, shown) = app.get(&format!("/v1/refunds/{refund_id}")).await;
    assert_eq!(shown["status"], "pending", "never failed: {shown}");
    assert_eq!(
        app.payment(&id).await["amount_refunded"],
        3_000,
        "it may have been paid: its amount stays reserved"
    );
    assert_eq!(app.dead_reasons().await, ["redelivered_too_often"]);
    // Held operations are not re-sent by the rescuer behind the operator's back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(operation(&app, &refund_id).await.held, "still held");
    assert_eq!(operation_times_failed(&app, &refund_id).await, 0);

    // The operator replays: the worker asks the processor first, then the
    // refund is paid exactly once, whatever the dead worker's call did.
    replay_with_the_cli(&app, "1 replayed, 0 dropped, 0 left").await;
    wait_refund(&app, &refund_id, "succeeded").await;
    assert_eq!(app.payment(&id).await["amount_refunded"], 3_000);
    assert_eq!(operation_times_failed(&app, &refund_id).await, 0);
    let stats = app.sim_stats().await;
    assert_refunded_once(&stats);
    assert!(stats.lookups >= 1, "asked before refunding: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_and_a_capture_held_by_a_wrong_processor_url_are_replayed_by_the_cli_and_done_once(
) {
    let mut app = TestApp::spawn().await;
    let captured = succeeded(&app, cards::VISA, 6_000, true).await;
    let authorized = succeeded(&app, cards::VISA, 4_000, false).await;
    app.stop_workers().await;
    // A wrong path on the right host: the processor answers 404.
    let right_url = app.sim_url.clone();
    app.sim_url = format!("{right_url}/wrong-prefix");
    app.start_worker().await;
    app.sim_url = right_url;

    let refund_id = request_refund(&app, &captured, json!({"reason": "other"})).await;
    let (status, body) = app
        .post(&format!("/v1/payments/{authorized}/capture"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_count_where(
        "both held",
        "operations",
        "held_at IS NOT NULL",
        2,
        Duration::from_secs(20),
    )
    .await;
    let op = operation(&app, &refund_id).await;
    assert_eq!(
        (op.status.as_str(), op.unknown),
        ("pending", false),
        "{op:?}"
    );
    assert!(
        op.last_error.as_deref().is_some_and(|e| e.contains("404")),
        "{op:?}"
    );
    assert_eq!(app.payment(&captured).await["amount_refunded"], 6_000);
    assert_eq!(app.payment(&authorized).await["captured"], false);
    assert_eq!(
        app.dead_reasons().await,
        ["processor_rejected", "processor_rejected"]
    );
    let stats = app.sim_stats().await;
    assert_eq!((stats.captures, stats.refunds), (0, 0), "{stats:?}");

    // Fix the configuration, replay with the real binary.
    app.stop_workers().await;
    app.start_worker().await;
    replay_with_the_cli(&app, "2 replayed, 0 dropped, 0 left").await;
    wait_refund(&app, &refund_id, "succeeded").await;
    app.wait_payment(&authorized, "captured", |p| p["captured"] == true)
        .await;
    assert_eq!(app.payment(&captured).await["refunded"], true);

    // A second replay finds nothing to do.
    replay_with_the_cli(&app, "0 replayed, 0 dropped, 0 left").await;
    let stats = app.sim_stats().await;
    assert_eq!(stats.captures, 1, "{stats:?}");
    assert_refunded_once(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_commit_is_lost_after_the_processor_paid_it_settles_through_the_lookup_once()
{
    // Calls slower than a blink but within the processor timeout.
    let mut worker = testkit::fast_worker_settings();
    worker.processor_timeout = Duration::from_secs(2);
    worker.lease = Duration::from_secs(8);
    let mut app = TestApp::with(Options {
        worker,
        worker_db_proxy: true,
        ..Options::api_only()
    })
    .await;
    // The first worker reaches PostgreSQL through a proxy the test cuts;
    // PostgreSQL checks every 100 ms that the client is still there, so a
    // statement whose connection is cut is abandoned, never committed.
    let proxied = format!(
        "{}?options=-c%20client_connection_check_interval%3D100",
        app.database_url_via(app.worker_db_proxy.as_ref())
    );
    app.start_worker_on(proxied).await;
    let id = succeeded(&app, cards::VISA, 5_000, true).await;
    app.set_faults(json!({"latency_ms": 1000})).await;
    let refund_id = request_refund(&app, &id, json!({"amount": 3_000, "reason": "other"})).await;
    wait_refund_in_flight(&app, &refund_id).await;
    // Hold the worker's outcome back at the database: its record of the
    // processor's answer waits for this lock.
    let holder = app
        .hold_lock("LOCK TABLE operations IN EXCLUSIVE MODE")
        .await;
    app.eventually("the processor paid it", Duration::from_secs(10), || async {
        (app.sim_stats().await.refunds == 1).then_some(())
    })
    .await;
    // The worker's record of the refund, waiting.
    let record = "processor_id = $5";
    app.wait_for_lock_wait(record).await;
    // Cut the worker's database connections: its commit is lost.
    app.worker_db_proxy.as_ref().expect("proxy").cut();
    app.eventually("the record abandoned", Duration::from_secs(10), || async {
        (app.lock_waiters(record).await == 0).then_some(())
    })
    .await;
    holder.rollback().await.expect("release");
    let op = operation(&app, &refund_id).await;
    assert_eq!(
        (op.status.as_str(), op.attempts),
        ("processing", 1),
        "nothing recorded: {op:?}"
    );
    assert_eq!(app.sim_stats().await.lookups, 0);

    // Another worker takes the void claim over and asks the processor.
    app.start_worker_on(app.database_url.clone()).await;
    let done = wait_refund(&app, &refund_id, "succeeded").await;
    assert!(done["processor_refund_id"]
        .as_str()
        .is_some_and(|r| r.starts_with("re_")));
    assert_eq!(app.payment(&id).await["amount_refunded"], 3_000);
    let op = operation(&app, &refund_id).await;
    assert_eq!(op.attempts, 2, "one takeover: {op:?}");
    assert_eq!(op.failure_code, None);
    let stats = app.sim_stats().await;
    assert_refunded_once(&stats);
    assert!(stats.lookups >= 1, "settled through the lookup: {stats:?}");

    // The first worker comes back; its late record cannot overwrite the
    // newer claim's result.
    app.set_faults(json!({"latency_ms": 0})).await;
    app.worker_db_proxy.as_ref().expect("proxy").restore();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(operation(&app, &refund_id).await.status, "succeeded");
    assert_eq!(app.payment(&id).await["amount_refunded"], 3_000);
    assert_eq!(app.sim_stats().await.refunds, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_through_a_long_outage_fails_as_not_processed_frees_its_amount_and_a_replay_pays_it_once(
) {
    let app = TestApp::with(Options::max_attempts(2)).await;
    let id = succeeded(&app, cards::VISA, 5_000, true).await;
    app.set_faults(json!({"outage": true})).await;
    let refund_id = request_refund(&app, &id, json!({"amount": 4_000, "reason": "other"})).await;
    let failed = wait_refund(&app, &refund_id, "failed").await;
    assert_eq!(failed["failure_code"], "processor_unavailable", "{failed}");
    assert!(
        failed["failure_message"]
            .as_str()
            .is_some_and(|m| m.starts_with("The refund was not processed")),
        "{failed}"
    );
    assert_eq!(app.payment(&id).await["amount_refunded"], 0, "freed");
    app.wait_queue_depth("dead", 1).await;
    assert_eq!(app.dead_reasons().await, ["attempts_exhausted"]);

    app.set_faults(json!({"outage": false})).await;
    replay_with_the_cli(&app, "1 replayed, 0 dropped, 0 left").await;
    wait_refund(&app, &refund_id, "succeeded").await;
    assert_eq!(
        app.payment(&id).await["amount_refunded"],
        4_000,
        "reserved again"
    );
    assert_refunded_once(&app.sim_stats().await);
}
