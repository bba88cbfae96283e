//! Webhooks end to end (DESIGN.md §10): a real HTTP receiver in the test
//! verifies every request with the `standardwebhooks` crate; real
//! PostgreSQL, RabbitMQ, processor-sim, API and workers; faults caused for
//! real (a receiver that fails, is down or hangs, a worker SIGKILLed
//! mid-delivery). The API killed after its commit: `api/tests/webhooks.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::cards;
use testkit::receiver::{header, Receiver};
use testkit::{payment_of, Options, TestApp};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker");

/// Any request with the test's key and `Prefer: wait=20`.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.call(&app.key, method, path, body, &[("Prefer", "wait=20")])
        .await
}

/// Registers an endpoint; its id and secret.
async fn register(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let (id, secret) = app.register_webhook(url, events).await;
    assert!(secret.starts_with("whsec_"));
    (id, secret)
}

/// A payment with `token`, waited for; its id and final status.
async fn pay(app: &TestApp, token: &str, amount: i64, capture: bool) -> (String, String) {
    let body = payment_of(token, amount, capture);
    let (_, payment) = send(app, reqwest::Method::POST, "/v1/payments", Some(body)).await;
    let id = payment["id"].as_str().expect("id").to_owned();
    let payment = app
        .wait_payment(&id, "the payment to finish", |p| {
            matches!(p["status"].as_str(), Some("succeeded" | "failed"))
        })
        .await;
    (id, payment["status"].as_str().expect("status").to_owned())
}

async fn attempts(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let (status, list) = send(
        app,
        reqwest::Method::GET,
        &format!("/v1/webhook_endpoints/{endpoint}/deliveries"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["data"].as_array().expect("data").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_change_of_every_kind_of_payment_arrives_signed_with_its_object() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (_, secret) = register(&app, &receiver.url(), &["*"]).await;

    let (plain, status) = pay(&app, cards::VISA, 1000, true).await;
    assert_eq!(status, "succeeded");
    let (declined, status) = pay(&app, cards::DECLINED, 1100, true).await;
    assert_eq!(status, "failed");
    let (captured, _) = pay(&app, cards::VISA, 2000, false).await;
    let (code, _) = send(
        &app,
        reqwest::Method::POST,
        &format!("/v1/payments/{captured}/capture"),
        Some(json!({})),
    )
    .await;
    assert!(code.is_success(), "capture: {code}");
    let (cancelled, _) = pay(&app, cards::VISA, 3000, false).await;
    let (code, _) = send(
        &app,
        reqwest::Method::POST,
        &format!("/v1/payments/{cancelled}/cancel"),
        Some(json!({"reason": "requested_by_customer"})),
    )
    .await;
    assert!(code.is_success(), "cancel: {code}");
    let (refunded, _) = pay(&app, cards::VISA, 4000, true).await;
    let (code, refund) = send(
        &app,
        reqwest::Method::POST,
        &format!("/v1/payments/{refunded}/refund"),
        Some(json!({"amount": 1500, "reason": "requested_by_customer"})),
    )
    .await;
    assert!(code.is_success(), "refund: {code} {refund}");
    let refund_id = refund["id"].as_str().expect("refund id").to_owned();

    let expected: Vec<(&str, &str)> = vec![
        ("payment.created", &plain),
        ("payment.succeeded", &plain),
        ("payment.created", &declined),
        ("payment.failed", &declined),
        ("payment.created", &captured),
        ("payment.succeeded", &captured),
        ("payment.captured", &captured),
        ("payment.created", &cancelled),
        ("payment.succeeded", &cancelled),
        ("payment.cancelled", &cancelled),
        ("payment.created", &refunded),
        ("payment.succeeded", &refunded),
        ("refund.created", &refund_id),
        ("refund.succeeded", &refund_id),
    ];
    let got = receiver
        .wait_for(&app, "every event", |got| {
            expected.iter().all(|(kind, id)| {
                got.iter()
                    .any(|r| r.kind() == *kind && r.object_id() == *id)
            })
        })
        .await;
    for request in &got {
        assert!(request.verifies_with(&secret), "signed: {}", request.kind());
        let event = request.json();
        assert_eq!(request.id(), event["id"], "webhook-id is the event id");
        assert!(request.id().starts_with("evt_"));
        assert_eq!(event["object"], "event");
        let object = &event["data"]["object"];
        // The API request behind a change is named; the worker's are not.
        let by_api = matches!(
            request.kind().as_str(),
            "payment.created" | "refund.created"
        );
        assert_eq!(
            event["request"]["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("req_")),
            by_api,
            "{event}"
        );
        match request.kind().as_str() {
            "payment.created" => assert_eq!(object["status"], "pending"),
            "payment.succeeded" => assert_eq!(object["status"], "succeeded"),
            "payment.failed" => {
                assert_eq!(object["status"], "failed");
                assert!(object["failure_code"].is_string(), "{object}");
            }
            "payment.captured" => {
                assert_eq!(object["captured"], true);
                assert_eq!(object["amount_captured"], 2000);
            }
            "payment.cancelled" => assert_eq!(object["status"], "cancelled"),
            "refund.created" => assert_eq!(object["status"], "pending"),
            "refund.succeeded" => assert_eq!(object["status"], "succeeded"),
            other => panic!("unexpected event type {other}"),
        }
    }
    // The object is the one `GET` shows: for a payment that has not changed
    // since its last event, exactly equal.
    let last = |kind: &str, id: &str| {
        got.iter()
            .find(|r| r.kind() == kind && r.object_id() == id)
            .expect("event")
            .json()["data"]["object"]
            .clone()
    };
    assert_eq!(last("payment.succeeded", &plain), app.payment(&plain).await);
    assert_eq!(
        last("payment.failed", &declined),
        app.payment(&declined).await
    );
    let (_, refund_now) = send(
        &app,
        reqwest::Method::GET,
        &format!("/v1/refunds/{refund_id}"),
        None,
    )
    .await;
    assert_eq!(last("refund.succeeded", &refund_id), refund_now);

    // The events are listed too, newest first, and filter by type.
    let (_, list) = send(&app, reqwest::Method::GET, "/v1/events?limit=100", None).await;
    assert_eq!(list["data"].as_array().expect("data").len(), expected.len());
    let (_, failed) = send(
        &app,
        reqwest::Method::GET,
        "/v1/events?type=payment.failed",
        None,
    )
    .await;
    let failed = failed["data"].as_array().expect("data");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["data"]["object"]["id"], declined.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_slower_than_the_timeout_is_retried_and_never_holds_payments() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    // Longer than the workers' WEBHOOK_TIMEOUT_MS (2 s in tests), once.
    *receiver.state.hang.lock().expect("lock") = Some(Duration::from_secs(6));
    let (endpoint, secret) = register(&app, &receiver.url(), &["payment.succeeded"]).await;
    let (first, _) = pay(&app, cards::VISA, 1000, true).await;
    receiver
        .wait_for(&app, "the first request, left hanging", |g| g.len() == 1)
        .await;
    // While the receiver hangs, payments are still processed.
    let (second, status) = pay(&app, cards::VISA, 1000, true).await;
    assert_eq!(status, "succeeded");
    let got = receiver
        .wait_for(&app, "both events, the first one again", |got| {
            got.iter().filter(|r| r.object_id() == first).count() == 2
                && got.iter().any(|r| r.object_id() == second)
        })
        .await;
    assert!(got.iter().all(|r| r.verifies_with(&secret)));
    let outcomes = app
        .eventually(
            "both deliveries logged",
            Duration::from_secs(10),
            || async {
                let outcomes: Vec<String> = attempts(&app, &endpoint)
                    .await
                    .iter()
                    .map(|a| a["outcome"].as_str().expect("outcome").to_owned())
                    .collect();
                (outcomes.len() >= 3).then_some(outcomes)
            },
        )
        .await;
    assert!(outcomes.contains(&"timeout".to_owned()), "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| *o == "delivered").count(),
        2,
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_the_event_three_times_with_one_id() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 500]);
    let (endpoint, secret) = register(&app, &receiver.url(), &["payment.succeeded"]).await;
    let (payment, _) = pay(&app, cards::VISA, 1000, true).await;
    let got = receiver
        .wait_for(&app, "three requests", |got| got.len() >= 3)
        .await;
    let id = got[0].id();
    for request in &got {
        assert_eq!(request.id(), id, "one webhook-id across retries");
        assert_eq!(request.object_id(), payment);
        assert!(request.verifies_with(&secret));
    }
    let log = app
        .eventually("three attempts logged", Duration::from_secs(10), || async {
            let log = attempts(&app, &endpoint).await;
            (log.len() == 3).then_some(log)
        })
        .await;
    let outcomes: Vec<(&str, i64)> = log
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().expect("outcome"),
                a["status_code"].as_i64().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [("delivered", 200), ("failed", 500), ("failed", 500)],
        "newest first"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got().len(), 3, "nothing more once delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_past_the_schedule_is_dead_lettered_and_redelivered_when_back() {
    let app = TestApp::spawn().await;
    let port = testkit::free_port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let (endpoint, secret) = register(&app, &url, &["payment.succeeded"]).await;
    let (payment, _) = pay(&app, cards::VISA, 1000, true).await;
    // Two retry delays: three attempts, then the dead letter.
    app.wait_count_where(
        "the delivery to die",
        "webhook_deliveries",
        "status = 'dead'",
        1,
        Duration::from_secs(30),
    )
    .await;
    let log = attempts(&app, &endpoint).await;
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log.iter().all(|a| a["outcome"] == "connection_error"),
        "{log:?}"
    );
    assert_eq!(app.queue_depth("webhooks.dead").await, 1);

    let receiver = Receiver::start_on(port).await;
    let event: String = sqlx::query_scalar(
        "SELECT 'evt_' || id::text FROM events WHERE type = 'payment.succeeded'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("event");
    let (status, body) = send(
        &app,
        reqwest::Method::POST,
        &format!("/v1/events/{event}/redeliver"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = receiver
        .wait_for(&app, "the redelivery", |got| !got.is_empty())
        .await;
    assert_eq!(got[0].id(), event);
    assert_eq!(got[0].object_id(), payment);
    assert!(got[0].verifies_with(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[410]);
    let (endpoint, _) = register(&app, &receiver.url(), &["payment.succeeded"]).await;
    pay(&app, cards::VISA, 1000, true).await;
    let (_, disabled) = app
        .eventually(
            "the endpoint to be disabled",
            Duration::from_secs(20),
            || async {
                let answer = send(
                    &app,
                    reqwest::Method::GET,
                    &format!("/v1/webhook_endpoints/{endpoint}"),
                    None,
                )
                .await;
                (answer.1["status"] == "disabled").then_some(answer)
            },
        )
        .await;
    assert!(disabled["disabled_reason"].is_string(), "{disabled}");
    assert!(disabled.get("secret").is_none(), "the secret is shown once");
    pay(&app, cards::VISA, 1000, true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.got().len(),
        1,
        "nothing is sent to a disabled endpoint"
    );
    let log = attempts(&app, &endpoint).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["outcome"], "gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_old_one_until_the_old_one_expires() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (endpoint, old) = register(&app, &receiver.url(), &["payment.succeeded"]).await;
    let (status, rotated) = send(
        &app,
        reqwest::Method::POST,
        &format!("/v1/webhook_endpoints/{endpoint}/rotate_secret"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(new, old);

    pay(&app, cards::VISA, 1000, true).await;
    let got = receiver.wait_for(&app, "one event", |g| g.len() == 1).await;
    let signatures = header(&got[0].headers, "webhook-signature");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(got[0].verifies_with(&new));
    assert!(got[0].verifies_with(&old), "the old secret still verifies");

    // 24 hours later (moved into the past rather than waited for).
    sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret_expires_at = now() - interval '1 second'",
    )
    .execute(&app.pool)
    .await
    .expect("expire the old secret");
    pay(&app, cards::VISA, 1000, true).await;
    let got = receiver
        .wait_for(&app, "two events", |g| g.len() == 2)
        .await;
    assert!(got[1].verifies_with(&new));
    assert!(!got[1].verifies_with(&old), "the old secret is rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_loses_no_event() {
    let app = TestApp::api_only().await;
    let receiver = Receiver::start().await;
    *receiver.state.hang.lock().expect("lock") = Some(Duration::from_secs(30));
    let (_, secret) = register(&app, &receiver.url(), &["payment.succeeded"]).await;
    let mut worker = app
        .worker_command(WORKER_BIN)
        .spawn()
        .expect("spawn worker");
    let first = app.post_payment(&payment_of(cards::VISA, 1000, true)).await;
    assert_eq!(first.status(), 202);
    receiver
        .wait_for(&app, "the first request, left hanging", |g| g.len() == 1)
        .await;
    testkit::sigkill(&worker);
    let _ = worker.wait().await;
    let ids = app.submit(cards::VISA, 5).await;
    let mut worker = app
        .worker_command(WORKER_BIN)
        .spawn()
        .expect("spawn worker");
    let got = receiver
        .wait_for(&app, "every payment's event", |got| {
            ids.iter()
                .all(|id| got.iter().any(|r| r.object_id() == *id))
                && got.len() >= 7
        })
        .await;
    // The interrupted event is sent again, with the same id.
    let interrupted = got[0].id();
    assert!(got[1..].iter().any(|r| r.id() == interrupted));
    assert!(got.iter().all(|r| r.verifies_with(&secret)));
    testkit::sigterm(&worker);
    let _ = worker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_refuses_a_name_that_now_resolves_to_loopback() {
    let mut settings = testkit::fast_worker_settings();
    settings.webhook_allow_private = false;
    let app = TestApp::with(Options {
        worker: settings,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    // Registered while the name pointed elsewhere (written directly: the
    // API would refuse it now), it resolves to loopback at delivery.
    let merchant: uuid::Uuid = sqlx::query_scalar("SELECT id FROM merchants LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("merchant");
    let endpoint = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, events, secret)
         VALUES ($1, $2, $3, '{*}', $4)",
    )
    .bind(endpoint)
    .bind(merchant)
    .bind(format!("http://localhost:{}/hooks", receiver.addr.port()))
    .bind(common::webhooks::new_secret())
    .execute(&app.pool)
    .await
    .expect("endpoint");
    pay(&app, cards::VISA, 1000, true).await;
    let blocked = app
        .eventually("blocked attempts", Duration::from_secs(20), || async {
            let n = app
                .count_where("webhook_attempts", "outcome = 'blocked'")
                .await;
            (n >= 2).then_some(n)
        })
        .await;
    assert!(blocked >= 2);
    assert!(receiver.got().is_empty(), "nothing reached loopback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_refuses_every_special_purpose_ipv6_literal() {
    let mut settings = testkit::fast_worker_settings();
    settings.webhook_allow_private = false;
    let app = TestApp::with(Options {
        worker: settings,
        ..Options::default()
    })
    .await;
    // Written directly (the API refuses them at registration): the worker
    // checks again at every delivery.
    let merchant: uuid::Uuid = sqlx::query_scalar("SELECT id FROM merchants LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("merchant");
    let urls = [
        "http://[fec0::1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://[2001:20::1]/",
        "http://[100::1]/",
        "http://[2001:db8::1]/",
    ];
    for url in urls {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, events, secret)
             VALUES ($1, $2, $3, '{payment.succeeded}', $4)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(merchant)
        .bind(url)
        .bind(common::webhooks::new_secret())
        .execute(&app.pool)
        .await
        .expect("endpoint");
    }
    pay(&app, cards::VISA, 1000, true).await;
    app.eventually(
        "every endpoint blocked",
        Duration::from_secs(20),
        || async {
            let endpoints: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT endpoint_id) FROM webhook_attempts WHERE outcome = 'blocked'",
        )
        .fetch_one(&app.pool)
        .await
        .expect("attempts");
            (endpoints == urls.len() as i64).then_some(())
        },
    )
    .await;
    assert_eq!(
        app.count_where("webhook_attempts", "outcome <> 'blocked'")
            .await,
        0,
        "no attempt reached any of them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_relay_cut_from_the_database_holds_its_events_and_sends_each_once_when_back() {
    let mut app = TestApp::with(Options {
        api_db_proxy: true,
        ..Options::api_only()
    })
    .await;
    let receiver = Receiver::start().await;
    register(&app, &receiver.url(), &["payment.succeeded"]).await;
    let ids = app.submit(cards::VISA, 5).await;

    // The API (and its event relay) loses the database; a worker (which
    // reaches it) charges the payments, and their `payment.succeeded`
    // events are written with the status change, for the relay to find.
    app.db_proxy.as_ref().expect("proxy").cut();
    app.start_worker().await;
    app.eventually("every payment charged", Duration::from_secs(30), || async {
        (app.count_status("succeeded").await == 5).then_some(())
    })
    .await;
    let waiting = "type = 'payment.succeeded' AND dispatched_at IS NULL";
    // Several relay passes fail meanwhile (every 200 ms); nothing is sent,
    // nothing is lost.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.count_where("events", waiting).await, 5);
    assert!(receiver.got().is_empty(), "nothing sent while cut");

    app.db_proxy.as_ref().expect("proxy").restore();
    receiver
        .wait_for(&app, "an event per payment", |got| got.len() >= 5)
        .await;
    assert_eq!(app.count_where("events", waiting).await, 0);
    // Give a duplicate time to show up: none does.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = receiver.got();
    let mut objects: Vec<String> = got.iter().map(|r| r.object_id()).collect();
    objects.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(objects, expected, "each payment's event exactly once");
    assert_eq!(
        app.count_where("webhook_deliveries", "status = 'delivered'")
            .await,
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_sealed_under_a_key_the_worker_does_not_hold_signs_and_sends_nothing() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    // Sealed under a key that is not in the workers' SECRETS_KEY (a key
    // dropped from the list too early): the worker cannot open it.
    let other: common::secret::SecretsKeys = "b3RoZXIta2V5LW5vdC1pbi10aGUtd29ya2VyLWxpc3Q="
        .parse()
        .expect("a key");
    let merchant: uuid::Uuid = sqlx::query_scalar("SELECT id FROM merchants LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("merchant");
    let endpoint = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, events, secret)
         VALUES ($1, $2, $3, '{payment.succeeded}', $4)",
    )
    .bind(endpoint)
    .bind(merchant)
    .bind(receiver.url())
    .bind(other.seal(&common::webhooks::new_secret(), endpoint.as_bytes()))
    .execute(&app.pool)
    .await
    .expect("endpoint");
    pay(&app, cards::VISA, 1000, true).await;
    let error: String = app
        .eventually("a failed attempt", Duration::from_secs(20), || async {
            sqlx::query_scalar(
                "SELECT error FROM webhook_attempts WHERE endpoint_id = $1 AND outcome = 'failed'
                 LIMIT 1",
            )
            .bind(endpoint)
            .fetch_optional(&app.pool)
            .await
            .expect("attempts")
            .flatten()
        })
        .await;
    assert!(error.contains("cannot open the signing secret"), "{error}");
    assert!(
        receiver.got().is_empty(),
        "nothing unsigned or mis-signed was sent"
    );
}
