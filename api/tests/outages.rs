//! The API under outages (DESIGN.md §3), each caused for real: the broker
//! or the database cut through a TCP proxy, the API process killed.

use std::time::Duration;

use serde_json::Value;
use testkit::{payment_body, Options, Proxy, TestApp};

const API_BIN: &str = env!("CARGO_BIN_EXE_api");

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_submitted_while_the_broker_is_unreachable_are_accepted_and_processed_after() {
    let app = TestApp::with(Options {
        api_amqp_proxy: true,
        ..Options::default()
    })
    .await;
    let proxy = app.amqp_proxy.as_ref().expect("proxy");
    proxy.cut();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.create_payment("tok_visa").await);
    }
    assert_eq!(
        count(&app, "outbox").await,
        20,
        "the outbox holds every message"
    );
    let ready = app
        .http
        .get(format!("{}/readyz", app.api_url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "not ready without the broker");

    proxy.restore();
    let counts = app.wait_all_terminal(20, Duration::from_secs(60)).await;
    assert_eq!(counts.get("succeeded"), Some(&20), "{counts:?}");
    assert_eq!(
        count(&app, "outbox").await,
        0,
        "the relay published and cleared the outbox"
    );
    let stats = app.sim_stats().await;
    assert_eq!((stats.charges, stats.duplicate_charges), (20, 0));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_503_in_the_envelope_that_writes_nothing_and_the_api_recovers() {
    let app = TestApp::with(Options {
        api_db_proxy: true,
        ..Options::default()
    })
    .await;
    let before = app.create_payment("tok_visa").await;
    let proxy = app.db_proxy.as_ref().expect("proxy");
    proxy.cut();

    let response = app
        .post_payment_with(
            &payment_body("tok_visa"),
            &[("Idempotency-Key", "during-outage")],
        )
        .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(response.headers().contains_key("request-id"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(body["error"]["code"], "database_unavailable");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("127.0.0.1") && !message.contains("Io"),
        "no internals leak: {message}"
    );

    let response = app
        .http
        .get(format!("{}/v1/payments/{before}", app.api_url))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 503);
    let ready = app
        .http
        .get(format!("{}/readyz", app.api_url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);

    proxy.restore();
    assert_eq!(
        count(&app, "payments").await,
        1,
        "nothing partial was written"
    );
    assert_eq!(
        count(&app, "idempotency_keys").await,
        0,
        "not even the idempotency key"
    );
    // The client's retry with the same key goes through as a fresh request.
    app.eventually("the API to recover", Duration::from_secs(20), || async {
        let response = app
            .post_payment_with(
                &payment_body("tok_visa"),
                &[("Idempotency-Key", "during-outage")],
            )
            .await;
        (response.status() == 202 && !response.headers().contains_key("idempotent-replayed"))
            .then_some(())
    })
    .await;
    let counts = app.wait_all_terminal(2, Duration::from_secs(30)).await;
    assert_eq!(counts.get("succeeded"), Some(&2));
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_commit_before_publish_is_covered_by_the_relay_of_another_api_process() {
    let mut app = TestApp::with(Options {
        api: false,
        ..Options::default()
    })
    .await;
    // A real API process whose broker is unreachable, so what it accepts
    // stays in the outbox; then it is killed.
    let broker_proxy = Proxy::start(app_amqp_addr()).await.expect("proxy");
    broker_proxy.cut();
    let port = testkit::free_port();
    let mut api = tokio::process::Command::new(API_BIN)
        .env_clear()
        .env("DATABASE_URL", &app.database_url)
        .env("AMQP_URL", app.amqp_url_via(Some(&broker_proxy)))
        .env("QUEUE_PREFIX", &app.prefix)
        .env("API_BIND", format!("127.0.0.1:{port}"))
        .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn api");
    app.api_url = format!("http://127.0.0.1:{port}");
    app.eventually(
        "the API process to listen",
        Duration::from_secs(30),
        || async {
            let health = app
                .http
                .get(format!("{}/healthz", app.api_url))
                .send()
                .await;
            health.ok().filter(|r| r.status() == 200)
        },
    )
    .await;
    for _ in 0..5 {
        app.create_payment("tok_visa").await;
    }
    testkit::sigkill(&api);
    api.wait().await.expect("reaped");
    assert_eq!(
        count(&app, "outbox").await,
        5,
        "accepted payments wait in the outbox"
    );

    // Another API process (healthy broker) relays them.
    app.start_api().await.expect("second api");
    let counts = app.wait_all_terminal(5, Duration::from_secs(60)).await;
    assert_eq!(counts.get("succeeded"), Some(&5), "{counts:?}");
    let stats = app.sim_stats().await;
    assert_eq!((stats.charges, stats.duplicate_charges), (5, 0));
    app.cleanup().await;
}

fn app_amqp_addr() -> std::net::SocketAddr {
    "127.0.0.1:5672".parse().expect("addr")
}
