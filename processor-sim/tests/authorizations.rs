//! Capturing and voiding authorizations over real HTTP:
//! `POST /v1/charges/:id/capture`, `POST /v1/charges/:id/void` and their
//! lookups.

mod support;

use std::time::{Duration, Instant};

use common::processor::{
    CaptureSucceeded, VoidSucceeded, AMOUNT_EXCEEDS_CAPTURABLE_CODE, CHARGE_NOT_CAPTURABLE_CODE,
    CHARGE_NOT_REFUNDABLE_CODE, CHARGE_NOT_VOIDABLE_CODE, NO_SUCH_CHARGE_CODE,
    OPERATION_NOT_FOUND_CODE,
};
use reqwest::StatusCode;
use serde_json::json;

use support::{
    capture_path, charge_body, error_code, impatient_client, not_found_code, void_path, TestSim,
};

#[tokio::test]
async fn a_capture_without_a_body_captures_the_whole_authorization() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(10_000).await;
    let response = sim.capture(&charge, "cap-all", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let captured: CaptureSucceeded = response.json().await.expect("capture body");
    assert!(captured.id.starts_with("cap_"), "{}", captured.id);
    assert_eq!(captured.charge, charge);
    assert_eq!((captured.amount, captured.amount_released), (10_000, 0));
    assert_eq!(captured.currency, "USD");
    assert!(captured.captured);

    // An empty JSON object is the same as no body.
    let other = sim.authorize(500).await;
    let response = sim.capture(&other, "cap-empty", Some(&json!({}))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let captured: CaptureSucceeded = response.json().await.expect("capture body");
    assert_eq!(captured.amount, 500);

    let stats = sim.stats().await;
    assert_eq!((stats.charges, stats.captures, stats.requests), (2, 2, 2));
    sim.stop().await;
}

#[tokio::test]
async fn a_partial_capture_releases_the_rest_and_only_the_captured_amount_is_refundable() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(10_000).await;
    let response = sim
        .capture(&charge, "cap-part", Some(&json!({"amount": 6_000})))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let captured: CaptureSucceeded = response.json().await.expect("capture body");
    assert_eq!((captured.amount, captured.amount_released), (6_000, 4_000));

    let response = sim.refund("re-over", &charge, 6_001, "ref_over").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "amount_exceeds_refundable");
    let response = sim.refund("re-all", &charge, 6_000, "ref_all").await;
    assert_eq!(response.status(), StatusCode::OK);
    sim.stop().await;
}

#[tokio::test]
async fn a_second_capture_with_another_key_is_refused_and_the_first_key_replays() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(2_000).await;
    let first = sim.capture(&charge, "cap-1", None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = first.text().await.expect("capture body");

    let second = sim.capture(&charge, "cap-2", None).await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(second).await, CHARGE_NOT_CAPTURABLE_CODE);

    let again = sim.capture(&charge, "cap-1", None).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.text().await.expect("replayed body"), first);

    let stats = sim.stats().await;
    assert_eq!((stats.captures, stats.replays), (1, 1));
    sim.stop().await;
}

#[tokio::test]
async fn a_capture_above_the_authorization_is_refused_and_the_refusal_is_stored() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(1_000).await;
    let response = sim
        .capture(&charge, "cap-big", Some(&json!({"amount": 1_001})))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let refused = response.text().await.expect("refusal body");
    assert!(
        refused.contains(AMOUNT_EXCEEDS_CAPTURABLE_CODE),
        "{refused}"
    );

    // The processor decided on that key: a lookup and a replay say the same.
    let found = sim.lookup(&capture_path(&charge), "cap-big").await;
    assert_eq!(found.status(), StatusCode::BAD_REQUEST);
    assert_eq!(found.text().await.expect("lookup body"), refused);
    let replayed = sim.capture(&charge, "cap-big", None).await;
    assert_eq!(replayed.status(), StatusCode::BAD_REQUEST);

    // The authorization is untouched: a new key captures it.
    let response = sim.capture(&charge, "cap-ok", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sim.stats().await.captures, 1);
    sim.stop().await;
}

#[tokio::test]
async fn only_an_approved_uncaptured_authorization_can_be_captured() {
    let sim = TestSim::start().await;
    let captured_at_once = sim.approved_charge("tok_visa", 1_000, true).await;
    let response = sim.capture(&captured_at_once, "cap-captured", None).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(response).await, CHARGE_NOT_CAPTURABLE_CODE);

    let mut body = charge_body("tok_chargeDeclined", "pay_declined");
    body["capture"] = json!(false);
    let declined: serde_json::Value = sim
        .charge("key-declined", &body)
        .await
        .json()
        .await
        .expect("declined body");
    let declined = declined["id"].as_str().expect("declined id");
    let response = sim.capture(declined, "cap-declined", None).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(response).await, CHARGE_NOT_CAPTURABLE_CODE);

    assert_eq!(sim.stats().await.captures, 0);
    sim.stop().await;
}

#[tokio::test]
async fn an_unknown_charge_is_404_and_nothing_is_stored_under_the_key() {
    let sim = TestSim::start().await;
    let response = sim.capture("ch_nope", "cap-nope", None).await;
    assert_eq!(not_found_code(response).await, NO_SUCH_CHARGE_CODE);
    let response = sim.void("ch_nope", "void-nope").await;
    assert_eq!(not_found_code(response).await, NO_SUCH_CHARGE_CODE);

    let response = sim.lookup(&capture_path("ch_nope"), "cap-nope").await;
    assert_eq!(not_found_code(response).await, OPERATION_NOT_FOUND_CODE);
    let response = sim.lookup(&void_path("ch_nope"), "void-nope").await;
    assert_eq!(not_found_code(response).await, OPERATION_NOT_FOUND_CODE);
    sim.stop().await;
}

#[tokio::test]
async fn a_malformed_capture_is_rejected_before_anything_happens() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(1_000).await;
    for body in [json!({"amount": 0}), json!({"amount": -5})] {
        let response = sim.capture(&charge, "cap-bad", Some(&body)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, "invalid_request");
    }
    let response = sim
        .capture(&charge, "cap-bad", Some(&json!({"amount": 5, "extra": 1})))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_json");

    let response = sim
        .client
        .post(sim.url(&capture_path(&charge)))
        .send()
        .await
        .expect("capture request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "missing_idempotency_key");

    // None of these took the key.
    let response = sim.capture(&charge, "cap-bad", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sim.stats().await.replays, 0);
    sim.stop().await;
}

#[tokio::test]
async fn a_voided_authorization_can_be_neither_captured_nor_refunded() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(3_000).await;
    let response = sim.void(&charge, "void-1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let voided_text = response.text().await.expect("void body");
    let voided: VoidSucceeded = serde_json::from_str(&voided_text).expect("void body");
    assert!(voided.id.starts_with("void_"), "{}", voided.id);
    assert_eq!(voided.charge, charge);
    assert!(voided.voided);
    assert_eq!((voided.amount, voided.currency.as_str()), (3_000, "USD"));

    let response = sim.capture(&charge, "cap-after-void", None).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(response).await, CHARGE_NOT_CAPTURABLE_CODE);
    let response = sim.refund("re-after-void", &charge, 1, "ref_void").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(response).await, CHARGE_NOT_REFUNDABLE_CODE);
    let response = sim.void(&charge, "void-2").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(response).await, CHARGE_NOT_VOIDABLE_CODE);

    // The first key replays its void, byte for byte.
    let again = sim.void(&charge, "void-1").await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.text().await.expect("replayed body"), voided_text);

    let stats = sim.stats().await;
    assert_eq!((stats.voids, stats.captures, stats.refunds), (1, 0, 0));
    sim.stop().await;
}

#[tokio::test]
async fn a_captured_charge_cannot_be_voided() {
    let sim = TestSim::start().await;
    let captured_at_once = sim.approved_charge("tok_visa", 1_000, true).await;
    let response = sim.void(&captured_at_once, "void-captured").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(response).await, CHARGE_NOT_VOIDABLE_CODE);

    let charge = sim.authorize(1_000).await;
    assert_eq!(
        sim.capture(&charge, "cap", None).await.status(),
        StatusCode::OK
    );
    let response = sim.void(&charge, "void-after-capture").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(response).await, CHARGE_NOT_VOIDABLE_CODE);
    assert_eq!(sim.stats().await.voids, 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_captures_with_one_key_capture_once() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(1_000).await;
    sim.set_faults(json!({"latency_ms": 50})).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = sim.client.clone();
        let url = sim.url(&capture_path(&charge));
        requests.spawn(async move {
            let response = client
                .post(url)
                .header(common::processor::IDEMPOTENCY_HEADER, "cap-same")
                .send()
                .await
                .expect("capture request");
            assert_eq!(response.status(), StatusCode::OK);
            response.text().await.expect("capture body")
        });
    }
    let bodies = requests.join_all().await;
    assert!(bodies.iter().all(|body| *body == bodies[0]), "{bodies:?}");
    let stats = sim.stats().await;
    assert_eq!((stats.captures, stats.replays), (1, 7));
    sim.stop().await;
}

#[tokio::test]
async fn faults_refuse_a_capture_before_it_happens_and_a_retry_succeeds() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(1_000).await;
    sim.set_faults(json!({"outage": true})).await;
    let response = sim.capture(&charge, "cap-f", None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(response).await, "processor_unavailable");
    let response = sim.void(&charge, "void-f").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    sim.set_faults(json!({"outage": false, "error_rate": 1.0}))
        .await;
    let response = sim.capture(&charge, "cap-f", None).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(response).await, "processor_error");
    let response = sim.void(&charge, "void-f").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let stats = sim.stats().await;
    assert_eq!((stats.captures, stats.voids), (0, 0));

    sim.set_faults(json!({"error_rate": 0.0, "latency_ms": 200}))
        .await;
    let started = Instant::now();
    let response = sim.capture(&charge, "cap-f", None).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.status(), StatusCode::OK);
    let stats = sim.stats().await;
    assert_eq!((stats.captures, stats.replays), (1, 0));
    sim.stop().await;
}

#[tokio::test]
async fn a_capture_whose_answer_timed_out_happened_and_its_lookup_returns_it() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(1_000).await;
    sim.set_faults(json!({"timeout_rate": 1.0})).await;
    let error = sim
        .post_with(
            &impatient_client(),
            &capture_path(&charge),
            "cap-lost",
            None,
        )
        .await
        .expect_err("the answer is held back past the client's timeout");
    assert!(error.is_timeout(), "{error}");
    sim.wait_for_stats(|stats| stats.captures == 1).await;

    let found = sim.lookup(&capture_path(&charge), "cap-lost").await;
    assert_eq!(found.status(), StatusCode::OK);
    let found: CaptureSucceeded = found.json().await.expect("capture body");
    assert_eq!(
        (found.charge.as_str(), found.amount),
        (charge.as_str(), 1_000)
    );

    sim.set_faults(json!({"timeout_rate": 0.0})).await;
    let replayed: CaptureSucceeded = sim
        .capture(&charge, "cap-lost", None)
        .await
        .json()
        .await
        .expect("capture body");
    assert_eq!(replayed.id, found.id);
    assert_eq!(sim.stats().await.captures, 1);
    sim.stop().await;
}

#[tokio::test]
async fn the_timeout_fault_holds_back_a_void_after_it_happened() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(1_000).await;
    sim.set_faults(json!({"timeout_rate": 1.0})).await;
    let error = sim
        .post_with(&impatient_client(), &void_path(&charge), "void-lost", None)
        .await
        .expect_err("the answer is held back past the client's timeout");
    assert!(error.is_timeout(), "{error}");
    sim.wait_for_stats(|stats| stats.voids == 1).await;

    let found = sim.lookup(&void_path(&charge), "void-lost").await;
    assert_eq!(found.status(), StatusCode::OK);
    let found: VoidSucceeded = found.json().await.expect("void body");
    assert_eq!(found.charge, charge);
    sim.stop().await;
}

#[tokio::test]
async fn capture_and_void_lookups_are_scoped_to_their_charge_and_kind() {
    let sim = TestSim::start().await;
    let first = sim.authorize(1_000).await;
    let second = sim.authorize(1_000).await;
    assert_eq!(
        sim.capture(&first, "shared-key", None).await.status(),
        StatusCode::OK
    );

    let found = sim.lookup(&capture_path(&first), "shared-key").await;
    assert_eq!(found.status(), StatusCode::OK);
    // Another charge's path, another kind, or the charges' lookup: not found.
    for path in [
        capture_path(&second),
        void_path(&first),
        "/v1/charges".to_owned(),
        "/v1/refunds".to_owned(),
    ] {
        let response = sim.lookup(&path, "shared-key").await;
        assert_eq!(
            not_found_code(response).await,
            OPERATION_NOT_FOUND_CODE,
            "{path}"
        );
    }

    // The same key voids the second charge: keys never collide across
    // charges or kinds.
    assert_eq!(
        sim.void(&second, "shared-key").await.status(),
        StatusCode::OK
    );
    let stats = sim.stats().await;
    assert_eq!(
        (stats.captures, stats.voids, stats.replays, stats.lookups),
        (1, 1, 0, 5)
    );
    sim.stop().await;
}

#[tokio::test]
async fn capture_and_void_lookups_see_the_outage_and_need_a_key() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(1_000).await;
    assert_eq!(sim.void(&charge, "void-k").await.status(), StatusCode::OK);
    sim.set_faults(json!({"outage": true})).await;
    let response = sim.lookup(&void_path(&charge), "void-k").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    sim.set_faults(json!({"outage": false})).await;

    let response = sim
        .client
        .get(sim.url(&capture_path(&charge)))
        .send()
        .await
        .expect("lookup request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "missing_idempotency_key");
    sim.stop().await;
}

#[tokio::test]
async fn reset_forgets_the_charges() {
    let sim = TestSim::start().await;
    let charge = sim.authorize(1_000).await;
    sim.reset().await;
    let response = sim.capture(&charge, "cap-reset", None).await;
    assert_eq!(not_found_code(response).await, NO_SUCH_CHARGE_CODE);
    sim.stop().await;
}
