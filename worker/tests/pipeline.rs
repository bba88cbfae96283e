//! A payment end to end: API → outbox → RabbitMQ → worker → processor-sim →
//! PostgreSQL, over real connections.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::cards;
use testkit::{payment_body, TestApp};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker");

/// The seed request with every optional field the seed response shows, so
/// every field of seed 001 has a value to compare types with.
fn full_seed_request(token: &str) -> Value {
    let mut body = payment_body(token);
    body["invoice_id"] = json!("inv_1");
    body["customer"] = json!({"email": "john.doe@example.com", "name": "John Doe"});
    body["statement_descriptor"] = json!("STATESET ORDER");
    body["billing_address"] = json!({"line1": "123 Main St", "city": "Los Angeles",
        "state": "CA", "postal_code": "90001", "country": "US"});
    body["metadata"] = json!({"order_reference": "ORD-2024-001", "channel": "web"});
    body
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field of `expected` is in `actual` with the same JSON type, at the
/// same nesting (a seed `null` only requires presence).
fn assert_same_shape(expected: &Value, actual: &Value, path: &str) {
    match expected {
        Value::Object(fields) => {
            let actual = actual
                .as_object()
                .unwrap_or_else(|| panic!("{path} must be an object, got {actual}"));
            for (key, value) in fields {
                let child = format!("{path}.{key}");
                let got = actual
                    .get(key)
                    .unwrap_or_else(|| panic!("{child} is missing"));
                assert_same_shape(value, got, &child);
            }
        }
        Value::Null => {}
        other => assert_eq!(
            json_type(other),
            json_type(actual),
            "{path}: seed {other}, ours {actual}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_request_round_trips_with_every_field_of_seed_001() {
    let app = TestApp::spawn().await;
    let response = app
        .post_payment(&full_seed_request("tok_1234567890abcdef"))
        .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.expect("json");
    assert_eq!(accepted["status"], "pending");
    let id = accepted["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("pay_"));

    app.wait_all_terminal(1, Duration::from_secs(30)).await;
    let payment = app.payment(&id).await;
    let seed: Value = serde_json::from_str(include_str!("fixtures/seed_001_response.json"))
        .expect("seed fixture");
    assert_same_shape(&seed, &payment, "payment");

    assert_eq!(payment["status"], "succeeded");
    assert_eq!(payment["captured"], true);
    assert_eq!(payment["amount"], 15000);
    assert_eq!(payment["currency"], "USD");
    assert_eq!(payment["payment_method"]["card"]["last4"], "4242");
    assert_eq!(payment["payment_method"]["card"]["brand"], "visa");
    assert_eq!(payment["payment_method"]["card"]["funding"], "credit");
    assert_eq!(payment["processor_response"]["approved"], true);
    assert_eq!(
        payment["customer"],
        json!({"id": "cust_abc123", "email": "john.doe@example.com", "name": "John Doe"})
    );
    assert_eq!(
        payment["refunds"],
        json!({"total_refunded": 0, "has_more": false, "data": []})
    );
    assert_eq!(
        payment["receipt_url"],
        format!("{}/receipts/{id}", app.api_url)
    );
    assert!(payment["receipt_number"]
        .as_str()
        .is_some_and(|n| n.len() == 9 && n.as_bytes()[4] == b'-'));
    assert!(payment["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    // The history shows the whole life: pending → processing → succeeded.
    let history = common::db::payments::history(&app.pool, id.parse().expect("id"))
        .await
        .expect("history");
    let path: Vec<&str> = history.iter().map(|h| h.to_status.as_str()).collect();
    assert_eq!(path, ["pending", "processing", "succeeded"]);
    let stats = app.sim_stats().await;
    assert_eq!((stats.charges, stats.duplicate_charges), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_tokens_succeed_with_their_cards_and_each_decline_fails_with_its_code() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for card in &cards::APPROVED {
        ids.push(app.create_payment(card.token).await);
    }
    for card in &cards::DECLINES {
        ids.push(app.create_payment(card.token).await);
    }
    app.wait_all_terminal(9, Duration::from_secs(30)).await;

    for (expected, id) in cards::APPROVED.iter().zip(&ids) {
        let payment = app.payment(id).await;
        assert_eq!(payment["status"], "succeeded", "{payment}");
        let card = &payment["payment_method"]["card"];
        assert_eq!(
            (
                card["last4"].as_str(),
                card["brand"].as_str(),
                card["funding"].as_str()
            ),
            (
                Some(expected.last4),
                Some(expected.brand),
                Some(expected.funding)
            )
        );
        assert_eq!(card["country"], "US");
        assert!(payment["processor_response"]["authorization_code"].is_string());
    }
    for (expected, id) in cards::DECLINES.iter().zip(&ids[cards::APPROVED.len()..]) {
        let token = expected.token;
        let payment = app.payment(id).await;
        assert_eq!(payment["status"], "failed", "{token}: {payment}");
        assert_eq!(payment["failure_code"], expected.code, "{token}");
        assert_eq!(
            payment["processor_response"]["decline_code"], expected.decline_code,
            "{token}"
        );
        assert_eq!(payment["processor_response"]["approved"], false);
        assert_eq!(payment["attempts"], 1, "a decline is never retried");
        assert!(payment["failure_message"].is_string());
    }
    let stats = app.sim_stats().await;
    assert_eq!(
        (stats.charges, stats.declines, stats.duplicate_charges),
        (4, 5, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_wait_returns_the_terminal_payment_and_without_it_the_answer_is_202_pending() {
    let app = TestApp::spawn().await;
    // Slow enough that a plain POST cannot see the outcome.
    app.set_faults(json!({"latency_ms": 300})).await;

    let plain = app.post_payment(&payment_body(cards::VISA)).await;
    assert_eq!(plain.status(), 202);
    let plain: Value = plain.json().await.expect("json");
    assert_eq!(plain["status"], "pending");

    let waited = app
        .post_payment_with(&payment_body(cards::MASTERCARD), &[("Prefer", "wait=10")])
        .await;
    assert_eq!(waited.status(), 200, "terminal within the wait");
    assert_eq!(
        waited
            .headers()
            .get("preference-applied")
            .map(|v| v.as_bytes()),
        Some(&b"wait=10"[..])
    );
    assert!(waited.headers().contains_key("location"));
    let waited: Value = waited.json().await.expect("json");
    assert_eq!(waited["status"], "succeeded");
    assert_eq!(waited["payment_method"]["card"]["last4"], "4444");

    let declined = app
        .post_payment_with(&payment_body(cards::DECLINED), &[("Prefer", "wait=10")])
        .await;
    assert_eq!(declined.status(), 200);
    let declined: Value = declined.json().await.expect("json");
    assert_eq!(declined["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_wait_answers_202_with_the_current_state_when_the_time_runs_out() {
    let app = TestApp::api_only().await;
    let started = std::time::Instant::now();
    let response = app
        .post_payment_with(&payment_body(cards::VISA), &[("Prefer", "wait=1")])
        .await;
    assert_eq!(response.status(), 202);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "held for the wait"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_payments_through_two_worker_processes_all_succeed_exactly_once() {
    let app = TestApp::api_only().await;
    let mut workers: Vec<_> = (0..2)
        .map(|_| {
            app.worker_command(WORKER_BIN)
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    let body = payment_body(cards::VISA);
    let posts = (0..200).map(|_| app.post_payment(&body));
    for response in futures_util::future::join_all(posts).await {
        let status = response.status();
        assert_eq!(status, 202, "{}", response.text().await.unwrap_or_default());
    }
    let counts = app.wait_all_terminal(200, Duration::from_secs(120)).await;
    assert_eq!(counts.get("succeeded"), Some(&200), "{counts:?}");
    let stats = app.sim_stats().await;
    assert_eq!(stats.charges, 200, "exactly one charge per payment");
    assert_eq!(stats.duplicate_charges, 0);

    // Both processes took part (competing consumers on one queue).
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT actor FROM payment_status_history WHERE to_status = 'succeeded'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("actors");
    assert_eq!(
        actors.len(),
        2,
        "both worker processes processed payments: {actors:?}"
    );
    for worker in &mut workers {
        testkit::sigterm(worker);
        let status = worker.wait().await.expect("worker exits");
        assert!(status.success(), "graceful exit on SIGTERM: {status}");
    }
}
