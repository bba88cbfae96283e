//! `GET /v1/charges?idempotency_key=<key>`: what a client learns about a
//! charge whose answer it lost, over real HTTP.

mod support;

use std::time::{Duration, Instant};

use common::processor::{ChargeApproved, OPERATION_NOT_FOUND_CODE};
use reqwest::StatusCode;
use serde_json::json;

use support::{charge_body, error_code, impatient_client, not_found_code, TestSim};

const CHARGES: &str = "/v1/charges";

#[tokio::test]
async fn a_lookup_after_an_approved_charge_returns_the_same_answer_byte_for_byte() {
    let sim = TestSim::start().await;
    let charged = sim
        .charge("key-ok", &charge_body("tok_visa", "pay_ok"))
        .await;
    assert_eq!(charged.status(), StatusCode::OK);
    let charged = charged.text().await.expect("charge body");

    let found = sim.lookup(CHARGES, "key-ok").await;
    assert_eq!(found.status(), StatusCode::OK);
    assert_eq!(
        found
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(found.text().await.expect("lookup body"), charged);

    let stats = sim.stats().await;
    assert_eq!(
        (stats.charges, stats.requests, stats.replays, stats.lookups),
        (1, 1, 0, 1)
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_lookup_after_a_decline_returns_the_402_answer() {
    let sim = TestSim::start().await;
    let declined = sim
        .charge("key-no", &charge_body("tok_chargeDeclined", "pay_no"))
        .await;
    assert_eq!(declined.status(), StatusCode::PAYMENT_REQUIRED);
    let declined = declined.text().await.expect("decline body");

    let found = sim.lookup(CHARGES, "key-no").await;
    assert_eq!(found.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(found.text().await.expect("lookup body"), declined);
    sim.stop().await;
}

#[tokio::test]
async fn a_lookup_after_a_charge_whose_answer_timed_out_returns_the_stored_approval() {
    let sim = TestSim::start().await;
    sim.set_faults(json!({"timeout_rate": 1.0})).await;
    let error = sim
        .charge_with(
            &impatient_client(),
            "key-lost",
            &charge_body("tok_visa", "pay_lost"),
        )
        .await
        .expect_err("the answer is held back past the client's timeout");
    assert!(error.is_timeout(), "{error}");

    // The timeout fault is still on: it does not apply to lookups, so this
    // one answers at once.
    let found = sim.lookup(CHARGES, "key-lost").await;
    assert_eq!(found.status(), StatusCode::OK);
    let found: ChargeApproved = found.json().await.expect("approved body");
    assert!(found.approved);

    // It is the charge that happened: a retry with the key replays it.
    sim.set_faults(json!({"timeout_rate": 0.0})).await;
    let replayed: ChargeApproved = sim
        .charge("key-lost", &charge_body("tok_visa", "pay_lost"))
        .await
        .json()
        .await
        .expect("approved body");
    assert_eq!(replayed.id, found.id);
    let stats = sim.stats().await;
    assert_eq!((stats.charges, stats.duplicate_charges), (1, 0));
    sim.stop().await;
}

#[tokio::test]
async fn an_unknown_key_is_404_with_the_not_found_code() {
    let sim = TestSim::start().await;
    let response = sim.lookup(CHARGES, "key-never-sent").await;
    assert_eq!(not_found_code(response).await, OPERATION_NOT_FOUND_CODE);
    sim.stop().await;
}

#[tokio::test]
async fn a_key_whose_charge_a_fault_refused_was_never_taken() {
    let sim = TestSim::start().await;
    sim.set_faults(json!({"error_rate": 1.0})).await;
    let refused = sim
        .charge("key-refused", &charge_body("tok_visa", "pay_refused"))
        .await;
    assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
    sim.set_faults(json!({"error_rate": 0.0})).await;

    let response = sim.lookup(CHARGES, "key-refused").await;
    assert_eq!(not_found_code(response).await, OPERATION_NOT_FOUND_CODE);
    sim.stop().await;
}

#[tokio::test]
async fn a_lookup_is_refused_by_the_outage_and_error_faults_and_delayed_by_latency() {
    let sim = TestSim::start().await;
    let charged = sim
        .charge("key-faults", &charge_body("tok_visa", "pay_faults"))
        .await
        .text()
        .await
        .expect("charge body");

    sim.set_faults(json!({"outage": true, "error_rate": 1.0}))
        .await;
    let response = sim.lookup(CHARGES, "key-faults").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(response).await, "processor_unavailable");

    sim.set_faults(json!({"outage": false})).await;
    let response = sim.lookup(CHARGES, "key-faults").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(response).await, "processor_error");

    sim.set_faults(json!({"error_rate": 0.0, "latency_ms": 200}))
        .await;
    let started = Instant::now();
    let response = sim.lookup(CHARGES, "key-faults").await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("lookup body"), charged);

    let stats = sim.stats().await;
    assert_eq!((stats.charges, stats.lookups), (1, 3));
    sim.stop().await;
}

// The default single-threaded runtime runs the server too: a charge task,
// once counted in `requests`, runs without yielding until it holds its key's
// slot and sleeps in the latency fault, so the lookup below surely finds the
// slot locked.
#[tokio::test]
async fn a_lookup_concurrent_with_a_slow_charge_waits_for_it_and_returns_its_answer() {
    let sim = TestSim::start().await;
    sim.set_faults(json!({"latency_ms": 1000})).await;
    let client = sim.client.clone();
    let url = sim.url(CHARGES);
    let charging = tokio::spawn(async move {
        let response = client
            .post(url)
            .header(common::processor::IDEMPOTENCY_HEADER, "key-slow")
            .json(&charge_body("tok_visa", "pay_slow"))
            .send()
            .await
            .expect("charge request");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("charge body")
    });
    sim.wait_for_stats(|stats| stats.requests == 1).await;
    // The lookup itself gets no latency, so it reaches the slot while the
    // charge still holds it.
    sim.set_faults(json!({"latency_ms": 0})).await;

    let found = sim.lookup(CHARGES, "key-slow").await;
    assert_eq!(found.status(), StatusCode::OK);
    let found = found.text().await.expect("lookup body");
    let charged = charging.await.expect("charge task");
    assert_eq!(found, charged);
    assert_eq!(sim.stats().await.charges, 1);
    sim.stop().await;
}

#[tokio::test]
async fn lookups_never_create_a_charge_nor_take_the_key() {
    let sim = TestSim::start().await;
    for _ in 0..3 {
        let response = sim.lookup(CHARGES, "key-later").await;
        assert_eq!(not_found_code(response).await, OPERATION_NOT_FOUND_CODE);
    }
    let stats = sim.stats().await;
    assert_eq!(
        (stats.charges, stats.requests, stats.replays, stats.lookups),
        (0, 0, 0, 3)
    );

    // The key is still free: the first charge with it charges.
    let response = sim
        .charge("key-later", &charge_body("tok_visa", "pay_later"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let stats = sim.stats().await;
    assert_eq!((stats.charges, stats.replays), (1, 0));
    sim.stop().await;
}

#[tokio::test]
async fn a_lookup_without_a_key_is_400() {
    let sim = TestSim::start().await;
    for url in [
        sim.url(CHARGES),
        sim.url("/v1/charges?idempotency_key="),
        sim.url("/v1/charges?idempotency_key=%20"),
        sim.url("/v1/charges?other=1"),
    ] {
        let response = sim.client.get(&url).send().await.expect("lookup request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(error_code(response).await, "missing_idempotency_key");
    }
    assert_eq!(sim.stats().await.lookups, 4);
    sim.stop().await;
}

#[tokio::test]
async fn a_404_of_an_unknown_path_has_no_not_found_code() {
    let sim = TestSim::start().await;
    let response = sim
        .client
        .get(sim.url("/no/such/path?idempotency_key=k"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.bytes().await.expect("body");
    assert!(
        serde_json::from_slice::<common::processor::ProcessorErrorBody>(&body).is_err(),
        "a client must be able to tell this 404 from a lookup's"
    );
    sim.stop().await;
}
