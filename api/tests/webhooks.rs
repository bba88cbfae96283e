//! Webhook endpoints and events at the API's edge: who may register what,
//! merchants kept apart, and an API killed after its commit whose events
//! still go out. Delivery itself: `worker/tests/webhooks.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::cards;
use testkit::receiver::Receiver;
use testkit::{payment_body, Options, TestApp};

const API_BIN: &str = env!("CARGO_BIN_EXE_api");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_that_reach_inside_the_network_or_are_not_http_are_refused() {
    let mut worker = testkit::fast_worker_settings();
    worker.webhook_allow_private = false;
    let app = TestApp::with(Options {
        worker,
        ..Options::api_only()
    })
    .await;
    for url in [
        "http://127.0.0.1/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hooks",
        "http://localhost:8080/hooks",
        "http://[::1]/hooks",
        "http://0.0.0.0/hooks",
        // IANA special-purpose IPv6 blocks that are not globally reachable.
        "http://[fec0::1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://[2001:20::1]/",
        "http://[2001:2::1]/",
        "http://[100::1]/",
        "http://[2001:db8::1]/",
        "http://[3fff::1]/",
        "http://[64:ff9b:1::1]/",
        "http://[5f00::1]/",
        "ftp://example.com/hooks",
        "garbage",
        "https://user:password@example.com/hooks",
    ] {
        let (status, error) = app
            .call(
                &app.key,
                reqwest::Method::POST,
                "/v1/webhook_endpoints",
                Some(json!({"url": url, "events": ["*"]})),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {error}");
        assert_eq!(error["error"]["param"], "url", "{url}: {error}");
    }
    for (body, param) in [
        (
            json!({"url": "http://example.com/", "events": []}),
            "events",
        ),
        (
            json!({"url": "http://example.com/", "events": ["payment.exploded"]}),
            "events",
        ),
        (json!({"events": ["*"]}), "url"),
        (
            json!({"url": "http://example.com/", "events": ["*"], "extra": 1}),
            "extra",
        ),
    ] {
        let (status, error) = app
            .call(
                &app.key,
                reqwest::Method::POST,
                "/v1/webhook_endpoints",
                Some(body.clone()),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
    }
    assert_eq!(app.count("webhook_endpoints").await, 0, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_guard_endpoints_and_merchants_never_see_each_others() {
    let app = TestApp::api_only().await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = app.register_webhook(&receiver.url(), &["*"]).await;
    let payments_only = app
        .key_for("default", &["payments:read", "payments:write"])
        .await;
    let (status, error) = app
        .call(
            &payments_only,
            reqwest::Method::POST,
            "/v1/webhook_endpoints",
            Some(json!({"url": receiver.url(), "events": ["*"]})),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    let (status, _) = app
        .call(
            &payments_only,
            reqwest::Method::GET,
            "/v1/events",
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let reader = app.key_for("default", &["webhooks:read"]).await;
    let (status, _) = app
        .call(
            &reader,
            reqwest::Method::DELETE,
            &format!("/v1/webhook_endpoints/{endpoint}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "reading is not writing");
    let (status, list) = app
        .call(
            &reader,
            reqwest::Method::GET,
            "/v1/webhook_endpoints",
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().expect("data").len(), 1);
    assert!(list["data"][0].get("secret").is_none(), "shown only once");

    app.create_payment(cards::VISA).await;
    let event: String = sqlx::query_scalar("SELECT 'evt_' || id::text FROM events LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("an event");
    let other = app
        .key_for(
            "another merchant",
            &[
                "payments:read",
                "payments:write",
                "webhooks:read",
                "webhooks:write",
            ],
        )
        .await;
    for (method, path) in [
        (
            reqwest::Method::GET,
            format!("/v1/webhook_endpoints/{endpoint}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/webhook_endpoints/{endpoint}"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/webhook_endpoints/{endpoint}/rotate_secret"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/webhook_endpoints/{endpoint}/deliveries"),
        ),
        (reqwest::Method::GET, format!("/v1/events/{event}")),
        (
            reqwest::Method::POST,
            format!("/v1/events/{event}/redeliver"),
        ),
    ] {
        let (status, body) = app.call(&other, method.clone(), &path, None, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    let (_, theirs) = app
        .call(&other, reqwest::Method::GET, "/v1/events", None, &[])
        .await;
    assert_eq!(
        theirs["data"],
        json!([]),
        "another merchant's events are unseen"
    );
    let (_, endpoints) = app
        .call(
            &other,
            reqwest::Method::GET,
            "/v1/webhook_endpoints",
            None,
            &[],
        )
        .await;
    assert_eq!(endpoints["data"], json!([]));

    let (status, deleted) = app
        .call(
            &app.key,
            reqwest::Method::DELETE,
            &format!("/v1/webhook_endpoints/{endpoint}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    assert_eq!(app.count("webhook_endpoints").await, 0);
}
/// An endpoint's stored secret columns.
async fn stored_secrets(app: &TestApp, endpoint: uuid::Uuid) -> (String, Option<String>) {
    sqlx::query_as("SELECT secret, previous_secret FROM webhook_endpoints WHERE id = $1")
        .bind(endpoint)
        .fetch_one(&app.pool)
        .await
        .expect("the endpoint")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_secrets_are_stored_sealed_and_a_dump_holds_none_of_them() {
    let mut app = TestApp::api_only().await;
    let (id, first) = app
        .register_webhook("http://127.0.0.1:9/hooks", &["*"])
        .await;
    let endpoint: uuid::Uuid = id.trim_start_matches("we_").parse().expect("uuid");
    let keys: common::secret::SecretsKeys = testkit::TEST_SECRETS_KEY.parse().expect("keys");
    let holds = |stored: &str, secret: &str| {
        stored.contains(secret) || stored.contains(secret.trim_start_matches("whsec_"))
    };

    let (stored, previous) = stored_secrets(&app, endpoint).await;
    assert!(stored.starts_with("sealed:v1:"), "{stored}");
    assert!(!holds(&stored, &first), "the column holds no secret");
    assert_eq!(previous, None);
    assert_eq!(
        keys.open(&stored, endpoint.as_bytes()).expect("opens"),
        first
    );
    assert!(
        keys.open(&stored, uuid::Uuid::now_v7().as_bytes()).is_err(),
        "bound to its own row"
    );

    let (status, rotated) = app
        .post(
            &format!("/v1/webhook_endpoints/{id}/rotate_secret"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["secret"].as_str().expect("secret");
    let (stored, previous) = stored_secrets(&app, endpoint).await;
    let previous = previous.expect("the previous secret");
    for column in [&stored, &previous] {
        assert!(column.starts_with("sealed:v1:"), "{column}");
        assert!(!holds(column, &first) && !holds(column, second), "{column}");
    }

    // A secret stored in the clear (before sealing) is sealed when an API
    // starts, and still opens to itself.
    let merchant: uuid::Uuid = sqlx::query_scalar("SELECT id FROM merchants LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .expect("merchant");
    let legacy = uuid::Uuid::now_v7();
    let clear = common::webhooks::new_secret();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, events, secret)
         VALUES ($1, $2, 'http://127.0.0.1:9/old', '{*}', $3)",
    )
    .bind(legacy)
    .bind(merchant)
    .bind(&clear)
    .execute(&app.pool)
    .await
    .expect("a legacy endpoint");
    app.stop_api().await;
    app.start_api().await.expect("restart");
    let sealed = app
        .eventually(
            "the legacy secret sealed",
            Duration::from_secs(10),
            || async {
                let (stored, _) = stored_secrets(&app, legacy).await;
                stored.starts_with("sealed:v1:").then_some(stored)
            },
        )
        .await;
    assert!(!holds(&sealed, &clear));
    assert_eq!(keys.open(&sealed, legacy.as_bytes()).expect("opens"), clear);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_their_retention_are_pruned_with_their_deliveries_and_attempts() {
    let mut app = TestApp::api_only().await;
    // An event with a delivery that was delivered (and its attempt): done.
    let done_payment = app.create_payment(cards::VISA).await;
    let (endpoint, _) = app
        .register_webhook("http://127.0.0.1:9/hooks", &["*"])
        .await;
    let endpoint: uuid::Uuid = endpoint.trim_start_matches("we_").parse().expect("uuid");
    let done: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM events WHERE payment_id = $1::uuid AND type = 'payment.created'",
    )
    .bind(done_payment.trim_start_matches("pay_"))
    .fetch_one(&app.pool)
    .await
    .expect("the first event");
    sqlx::query(
        "WITH d AS (INSERT INTO webhook_deliveries (event_id, endpoint_id, status, attempts)
                    VALUES ($1, $2, 'delivered', 1) RETURNING id)
         INSERT INTO webhook_attempts (delivery_id, endpoint_id, event_id, attempt, outcome,
                                       status_code, duration_ms)
         SELECT id, $2, $1, 1, 'delivered', 200, 5 FROM d",
    )
    .bind(done)
    .bind(endpoint)
    .execute(&app.pool)
    .await
    .expect("a delivered delivery");
    // An event whose delivery is still pending (no worker runs here).
    app.create_payment(cards::VISA).await;
    app.eventually("the events rendered", Duration::from_secs(10), || async {
        (app.count_where("events", "dispatched_at IS NULL").await == 0).then_some(())
    })
    .await;
    sqlx::query("UPDATE events SET created_at = now() - interval '31 days'")
        .execute(&app.pool)
        .await
        .expect("age them");
    let pending = app
        .count_where(
            "events",
            "id IN (SELECT event_id FROM webhook_deliveries WHERE status = 'pending')",
        )
        .await;
    assert!(pending >= 1, "an event waits for its delivery");
    // A recent one.
    app.create_payment(cards::VISA).await;
    let recent = app
        .count_where("events", "created_at > now() - interval '1 day'")
        .await;

    // The pruner runs when an API starts.
    app.stop_api().await;
    app.start_api().await.expect("restart");
    app.eventually(
        "the old, finished events pruned",
        Duration::from_secs(10),
        || async { (app.count("events").await == pending + recent).then_some(()) },
    )
    .await;
    assert_eq!(
        app.count_where("events", &format!("id = '{done}'")).await,
        0
    );
    assert_eq!(
        app.count("webhook_attempts").await,
        0,
        "its attempt went with it"
    );
    assert_eq!(
        app.count_where("webhook_deliveries", "status = 'delivered'")
            .await,
        0
    );
    assert_eq!(
        app.count_where("webhook_deliveries", "status = 'pending'")
            .await,
        pending + recent,
        "pending deliveries kept, and their events"
    );

    let response = app
        .request(reqwest::Method::GET, "/v1/events")
        .send()
        .await
        .expect("list");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("event-retention-days")
            .and_then(|v| v.to_str().ok()),
        Some("30"),
        "the list says how far back it goes"
    );
    // An event's object has the keys of `GET`, in its order.
    let events: Value = response.json().await.expect("json");
    let object = &events["data"][0]["data"]["object"];
    let id = object["id"].as_str().expect("the payment id");
    assert_eq!(
        testkit::http::key_order(object),
        testkit::http::key_order(&app.payment(id).await)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_killed_after_its_commit_still_gets_the_event_out() {
    let mut app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.register_webhook(&receiver.url(), &["payment.created", "payment.succeeded"])
        .await;
    app.stop_api().await;
    let port = testkit::free_port();
    let mut api = app
        .api_command(API_BIN, &testkit::amqp_url(), port)
        .spawn()
        .expect("spawn api");
    let url = format!("http://127.0.0.1:{port}");
    app.eventually(
        "the API process to listen",
        Duration::from_secs(30),
        || async {
            let health = app.http.get(format!("{url}/healthz")).send().await;
            health.ok().filter(|r| r.status() == 200)
        },
    )
    .await;
    let response = app
        .http
        .post(format!("{url}/v1/payments"))
        .bearer_auth(&app.key)
        .json(&payment_body(cards::VISA))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    testkit::sigkill(&api);
    let _ = api.wait().await;
    let payment: Value = response.json().await.expect("json");
    let id = payment["id"].as_str().expect("id").to_owned();
    app.start_api().await.expect("a new API");
    let got = receiver
        .wait_for(&app, "both events", |got| {
            ["payment.created", "payment.succeeded"]
                .iter()
                .all(|kind| got.iter().any(|r| r.kind() == *kind && r.object_id() == id))
        })
        .await;
    assert!(got.len() >= 2);
}
