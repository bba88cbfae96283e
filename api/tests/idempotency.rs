//! Idempotency-Key on `POST /v1/payments` (DESIGN.md §5).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use testkit::cards;
use testkit::{payment_body, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_and_request_replays_the_stored_response() {
    let app = TestApp::api_only().await;
    let body = payment_body(cards::VISA);
    let first = app
        .post_payment_with(&body, &[("Idempotency-Key", "order-1")])
        .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_location = first.headers().get("location").cloned();
    let first: Value = first.json().await.expect("json");

    let second = app
        .post_payment_with(&body, &[("Idempotency-Key", "order-1")])
        .await;
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(second.headers().get("location").cloned(), first_location);
    let second: Value = second.json().await.expect("json");
    assert_eq!(first, second, "the stored body, byte for byte in meaning");
    assert_eq!(
        testkit::http::key_order(&first),
        testkit::http::key_order(&second),
        "its keys in the same order"
    );
    let id = first["id"].as_str().expect("id");
    assert_eq!(
        testkit::http::key_order(&second),
        testkit::http::key_order(&app.payment(id).await),
        "the order of GET"
    );
    assert_eq!(app.payment_count().await, 1, "one payment for one key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_a_different_request_is_422_and_writes_nothing() {
    let app = TestApp::api_only().await;
    let response = app
        .post_payment_with(&payment_body(cards::VISA), &[("Idempotency-Key", "k")])
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mut other = payment_body(cards::VISA);
    other["amount"] = 999.into();
    let response = app
        .post_payment_with(&other, &[("Idempotency-Key", "k")])
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "idempotency_error");
    assert_eq!(body["error"]["param"], "Idempotency-Key");
    assert_eq!(app.payment_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_request_while_the_first_is_in_flight_is_409() {
    let app = TestApp::api_only().await;
    // Hold the first request inside its transaction: lock the outbox table so
    // its payment insert (which writes an outbox row) waits, with its key
    // already claimed.
    let blocker = app.hold_lock("LOCK TABLE outbox IN EXCLUSIVE MODE").await;
    let body = payment_body(cards::VISA);
    let first = app
        .request(Method::POST, "/v1/payments")
        .header("Idempotency-Key", "slow")
        .json(&body);
    let first = tokio::spawn(async move { first.send().await.expect("first request") });
    app.eventually(
        "the first request to claim its key",
        Duration::from_secs(10),
        || async { (app.count("idempotency_keys").await == 1).then_some(()) },
    )
    .await;
    let second = app
        .post_payment_with(&body, &[("Idempotency-Key", "slow")])
        .await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let error: Value = second.json().await.expect("json");
    assert_eq!(error["error"]["type"], "idempotency_error");

    blocker.rollback().await.expect("release");
    let first = first.await.expect("join");
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    // Now it replays.
    let third = app
        .post_payment_with(&body, &[("Idempotency-Key", "slow")])
        .await;
    assert_eq!(third.status(), StatusCode::ACCEPTED);
    assert!(third.headers().contains_key("idempotent-replayed"));
    assert_eq!(app.payment_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_requests_with_one_key_create_exactly_one_payment() {
    let app = TestApp::api_only().await;
    let body = payment_body(cards::VISA);
    let requests = (0..32).map(|_| app.post_payment_with(&body, &[("Idempotency-Key", "burst")]));
    let responses = futures_util::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        let status = response.status();
        assert!(
            status == StatusCode::ACCEPTED || status == StatusCode::CONFLICT,
            "every answer is the payment or 'in flight', got {status}"
        );
        if status == StatusCode::ACCEPTED {
            let body: Value = response.json().await.expect("json");
            ids.insert(body["id"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(ids.len(), 1, "every 202 names the same payment");
    assert_eq!(app.payment_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_per_merchant_and_validation_failures_are_not_stored() {
    let app = TestApp::api_only().await;
    let other_key = app
        .key_for("acme", &["payments:write", "payments:read"])
        .await;
    let body = payment_body(cards::VISA);

    let mut invalid = body.clone();
    invalid["amount"] = 0.into();
    let response = app
        .post_payment_with(&invalid, &[("Idempotency-Key", "shared")])
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.count("idempotency_keys").await,
        0,
        "a rejected request does not use up the key"
    );

    let ours = app
        .post_payment_with(&body, &[("Idempotency-Key", "shared")])
        .await;
    assert_eq!(ours.status(), StatusCode::ACCEPTED);
    let theirs = app
        .request_as(&other_key, Method::POST, "/v1/payments")
        .header("Idempotency-Key", "shared")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    assert!(
        theirs.headers().get("idempotent-replayed").is_none(),
        "another merchant's key space"
    );
    let ours: Value = ours.json().await.expect("json");
    let theirs: Value = theirs.json().await.expect("json");
    assert_ne!(ours["id"], theirs["id"]);
    assert_eq!(app.payment_count().await, 2);

    let too_long = "k".repeat(256);
    let response = app
        .post_payment_with(&body, &[("Idempotency-Key", too_long.as_str())])
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["param"], "Idempotency-Key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_older_than_the_retention_are_reaped_and_younger_ones_kept() {
    let app = TestApp::api_only().await;
    let body = payment_body(cards::VISA);
    for key in ["old", "new"] {
        let response = app
            .post_payment_with(&body, &[("Idempotency-Key", key)])
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'",
    )
    .execute(&app.pool)
    .await
    .expect("age a key");
    let reaped = common::db::idempotency::reap(&app.pool, Duration::from_secs(24 * 3600))
        .await
        .expect("reap");
    assert_eq!(reaped, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&app.pool)
        .await
        .expect("keys");
    assert_eq!(left, vec!["new".to_owned()]);
}

/// Issue 18, item 3: `POST /cancel` claims its key before it looks at the
/// payment, so a client retrying after a lost answer gets the first answer
/// (`200 cancelled`, replayed), not `400 payment_not_cancellable`; the same
/// key with another body is `422`, and while the first is in flight `409`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_replays_its_first_answer_refuses_another_body_and_an_in_flight_key() {
    let app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    let cancel = format!("/v1/payments/{id}/cancel");
    let send = |key: &'static str, body: Value| {
        app.request(Method::POST, &cancel)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };

    // In flight: the cancel's history row waits on a lock the test holds,
    // with its key already claimed.
    let blocker = app
        .hold_lock("LOCK TABLE payment_status_history IN EXCLUSIVE MODE")
        .await;
    let first = app
        .request(Method::POST, &cancel)
        .header("Idempotency-Key", "cancel-1")
        .json(&serde_json::json!({}));
    let first = tokio::spawn(async move { first.send().await.expect("first cancel") });
    app.eventually(
        "the first cancel to claim its key",
        Duration::from_secs(10),
        || async { (app.count("idempotency_keys").await == 1).then_some(()) },
    )
    .await;
    let second = send("cancel-1", serde_json::json!({})).await.expect("send");
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let error: Value = second.json().await.expect("json");
    assert_eq!(error["error"]["code"], "idempotency_key_in_use", "{error}");
    blocker.rollback().await.expect("release");

    let first = first.await.expect("join");
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("json");
    assert_eq!(first["status"], "cancelled", "{first}");

    let replay = send("cancel-1", serde_json::json!({})).await.expect("send");
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let replay: Value = replay.json().await.expect("json");
    assert_eq!(replay, first, "the first answer, replayed");

    // Its event names the request behind it, as every API change's does.
    let (status, events) = app.get("/v1/events?type=payment.cancelled").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let event = &events["data"][0];
    assert_eq!(event["request"]["idempotency_key"], "cancel-1", "{events}");
    assert!(event["request"]["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("req_")));

    let other = send("cancel-1", serde_json::json!({"reason": "duplicate"}))
        .await
        .expect("send");
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = other.json().await.expect("json");
    assert_eq!(error["error"]["code"], "idempotency_key_reused", "{error}");

    // A new key on the cancelled payment is the plain refusal.
    let again = send("cancel-2", serde_json::json!({})).await.expect("send");
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let error: Value = again.json().await.expect("json");
    assert_eq!(error["error"]["code"], "payment_not_cancellable", "{error}");
}
