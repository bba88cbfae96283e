//! The API under outages (DESIGN.md §3), each caused for real: the broker
//! or the database cut through a TCP proxy, the API process killed.

use std::time::Duration;

use serde_json::Value;
use testkit::cards;
use testkit::{payment_body, Options, Proxy, TestApp};

const API_BIN: &str = env!("CARGO_BIN_EXE_api");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_submitted_while_the_broker_is_unreachable_are_accepted_and_processed_after() {
    let app = TestApp::with(Options {
        api_amqp_proxy: true,
        ..Options::default()
    })
    .await;
    let proxy = app.amqp_proxy.as_ref().expect("proxy");
    proxy.cut();
    app.submit(cards::VISA, 20).await;
    assert_eq!(
        app.count("outbox").await,
        20,
        "the outbox holds every message"
    );
    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "not ready without the broker");

    proxy.restore();
    let counts = app.wait_all_terminal(20, Duration::from_secs(60)).await;
    assert_eq!(counts.get("succeeded"), Some(&20), "{counts:?}");
    assert_eq!(
        app.count("outbox").await,
        0,
        "the relay published and cleared the outbox"
    );
    let stats = app.sim_stats().await;
    assert_eq!((stats.charges, stats.duplicate_charges), (20, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_503_in_the_envelope_that_writes_nothing_and_the_api_recovers() {
    let app = TestApp::with(Options {
        api_db_proxy: true,
        ..Options::default()
    })
    .await;
    let before = app.create_payment(cards::VISA).await;
    let proxy = app.db_proxy.as_ref().expect("proxy");
    proxy.cut();

    let response = app
        .post_payment_with(
            &payment_body(cards::VISA),
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
        .get_as(&app.key, &format!("/v1/payments/{before}"))
        .await;
    assert_eq!(response.status(), 503);
    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);

    proxy.restore();
    assert_eq!(
        app.count("payments").await,
        1,
        "nothing partial was written"
    );
    assert_eq!(
        app.count("idempotency_keys").await,
        0,
        "not even the idempotency key"
    );
    // The client's retry with the same key goes through as a fresh request.
    app.eventually("the API to recover", Duration::from_secs(20), || async {
        let response = app
            .post_payment_with(
                &payment_body(cards::VISA),
                &[("Idempotency-Key", "during-outage")],
            )
            .await;
        (response.status() == 202 && !response.headers().contains_key("idempotent-replayed"))
            .then_some(())
    })
    .await;
    let counts = app.wait_all_terminal(2, Duration::from_secs(30)).await;
    assert_eq!(counts.get("succeeded"), Some(&2));
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
    let broker_proxy = Proxy::start(testkit::amqp_addr()).await.expect("proxy");
    broker_proxy.cut();
    let port = testkit::free_port();
    let mut api = app
        .api_command(API_BIN, &app.amqp_url_via(Some(&broker_proxy)), port)
        .spawn()
        .expect("spawn api");
    app.api_url = format!("http://127.0.0.1:{port}");
    app.eventually(
        "the API process to listen",
        Duration::from_secs(30),
        || async {
            let health = app.http.get(app.url("/healthz")).send().await;
            health.ok().filter(|r| r.status() == 200)
        },
    )
    .await;
    for _ in 0..5 {
        app.create_payment(cards::VISA).await;
    }
    testkit::sigkill(&api);
    api.wait().await.expect("reaped");
    assert_eq!(
        app.count("outbox").await,
        5,
        "accepted payments wait in the outbox"
    );

    // Another API process (healthy broker) relays them.
    app.start_api().await.expect("second api");
    let counts = app.wait_all_terminal(5, Duration::from_secs(60)).await;
    assert_eq!(counts.get("succeeded"), Some(&5), "{counts:?}");
    let stats = app.sim_stats().await;
    assert_eq!((stats.charges, stats.duplicate_charges), (5, 0));
}
