//! Refunds over real HTTP: `POST /v1/refunds` and its lookup.

mod support;

use std::time::{Duration, Instant};

use common::processor::{
    RefundDeclined, RefundStatus, RefundSucceeded, AMOUNT_EXCEEDS_REFUNDABLE_CODE,
    CHARGE_NOT_REFUNDABLE_CODE, IDEMPOTENCY_HEADER, NO_SUCH_CHARGE_CODE, OPERATION_NOT_FOUND_CODE,
    REFUND_DECLINED_CODE,
};
use reqwest::StatusCode;
use serde_json::json;

use support::{error_code, impatient_client, not_found_code, refund_body, TestSim, REFUNDS};

#[tokio::test]
async fn a_refund_of_a_captured_charge_is_paid() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    let response = sim.refund("re-1", &charge, 2_500, "ref_1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let refund: RefundSucceeded = response.json().await.expect("refund body");
    assert!(refund.id.starts_with("re_"), "{}", refund.id);
    assert_eq!(refund.charge, charge);
    assert_eq!((refund.amount, refund.currency.as_str()), (2_500, "USD"));
    assert_eq!(refund.status, RefundStatus::Succeeded);
    assert_eq!(refund.reference, "ref_1");

    let stats = sim.stats().await;
    assert_eq!(
        (stats.refunds, stats.duplicate_refunds, stats.over_refunds),
        (1, 0, 0)
    );
    sim.stop().await;
}

#[tokio::test]
async fn refunds_add_up_to_the_captured_amount_and_no_further() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    assert_eq!(
        sim.refund("re-a", &charge, 4_000, "ref_a").await.status(),
        StatusCode::OK
    );
    let response = sim.refund("re-b", &charge, 6_001, "ref_b").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, AMOUNT_EXCEEDS_REFUNDABLE_CODE);
    assert_eq!(
        sim.refund("re-c", &charge, 6_000, "ref_c").await.status(),
        StatusCode::OK
    );
    let response = sim.refund("re-d", &charge, 1, "ref_d").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, AMOUNT_EXCEEDS_REFUNDABLE_CODE);

    let stats = sim.stats().await;
    assert_eq!((stats.refunds, stats.over_refunds), (2, 0));
    sim.stop().await;
}

#[tokio::test]
async fn only_a_captured_charge_can_be_refunded() {
    let sim = TestSim::start().await;
    let authorization = sim.authorize(1_000).await;
    let response = sim.refund("re-auth", &authorization, 100, "ref_auth").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(error_code(response).await, CHARGE_NOT_REFUNDABLE_CODE);

    // Once captured, it can be.
    assert_eq!(
        sim.capture(&authorization, "cap", None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        sim.refund("re-auth-2", &authorization, 100, "ref_auth")
            .await
            .status(),
        StatusCode::OK
    );

    let response = sim.refund("re-nope", "ch_nope", 100, "ref_nope").await;
    assert_eq!(not_found_code(response).await, NO_SUCH_CHARGE_CODE);
    // An unknown charge takes no key.
    let response = sim.lookup(REFUNDS, "re-nope").await;
    assert_eq!(not_found_code(response).await, OPERATION_NOT_FOUND_CODE);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twelve_concurrent_refunds_of_1000_against_10000_pay_ten_and_never_over_refund() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    // Latency keeps all twelve in flight together; their keys differ, so
    // nothing but the charge book stands between them.
    sim.set_faults(json!({"latency_ms": 50})).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..12 {
        let client = sim.client.clone();
        let url = sim.url(REFUNDS);
        let body = refund_body(&charge, 1_000, &format!("ref_{i}"));
        requests.spawn(async move {
            let response = client
                .post(url)
                .header(IDEMPOTENCY_HEADER, format!("re-{i}"))
                .json(&body)
                .send()
                .await
                .expect("refund request");
            let status = response.status();
            let body: serde_json::Value = response.json().await.expect("refund body");
            (status, body)
        });
    }
    let answers = requests.join_all().await;
    let paid = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(paid, 10, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], AMOUNT_EXCEEDS_REFUNDABLE_CODE);
    }

    let stats = sim.stats().await;
    assert_eq!(
        (stats.refunds, stats.over_refunds, stats.duplicate_refunds),
        (10, 0, 0)
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_card_that_refuses_refunds_gets_a_402_and_keeps_its_amount_refundable() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_refundFails", 5_000, true).await;
    let response = sim.refund("re-fail", &charge, 5_000, "ref_fail").await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let declined_text = response.text().await.expect("decline body");
    let declined: RefundDeclined = serde_json::from_str(&declined_text).expect("decline body");
    assert!(declined.id.starts_with("re_"), "{}", declined.id);
    assert_eq!(declined.charge, charge);
    assert_eq!(declined.amount, 5_000);
    assert_eq!(declined.status, RefundStatus::Failed);
    assert_eq!(declined.code, REFUND_DECLINED_CODE);
    assert!(!declined.message.is_empty());

    // Stored like any answer: the replay and the lookup return the 402.
    let replayed = sim.refund("re-fail", &charge, 5_000, "ref_fail").await;
    assert_eq!(replayed.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(replayed.text().await.expect("replay body"), declined_text);
    let found = sim.lookup(REFUNDS, "re-fail").await;
    assert_eq!(found.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(found.text().await.expect("lookup body"), declined_text);

    // Nothing was paid, so the whole amount is still asked for, not refused
    // as exceeding what is refundable.
    let response = sim.refund("re-fail-2", &charge, 5_000, "ref_fail_2").await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(sim.stats().await.refunds, 0);
    sim.stop().await;
}

#[tokio::test]
async fn a_repeated_key_replays_the_refund_without_paying_again() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    let first = sim.refund("re-same", &charge, 1_000, "ref_same").await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = first.text().await.expect("refund body");
    let second = sim.refund("re-same", &charge, 1_000, "ref_same").await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.text().await.expect("replay body"), first);

    let stats = sim.stats().await;
    assert_eq!(
        (stats.refunds, stats.replays, stats.duplicate_refunds),
        (1, 1, 0)
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_with_one_key_pay_once() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    sim.set_faults(json!({"latency_ms": 50})).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = sim.client.clone();
        let url = sim.url(REFUNDS);
        let body = refund_body(&charge, 1_000, "ref_once");
        requests.spawn(async move {
            let response = client
                .post(url)
                .header(IDEMPOTENCY_HEADER, "re-once")
                .json(&body)
                .send()
                .await
                .expect("refund request");
            assert_eq!(response.status(), StatusCode::OK);
            response.text().await.expect("refund body")
        });
    }
    let bodies = requests.join_all().await;
    assert!(bodies.iter().all(|body| *body == bodies[0]), "{bodies:?}");
    let stats = sim.stats().await;
    assert_eq!((stats.refunds, stats.replays), (1, 7));
    sim.stop().await;
}

#[tokio::test]
async fn one_reference_paid_under_two_keys_counts_as_a_duplicate_refund() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    assert_eq!(
        sim.refund("re-x", &charge, 1_000, "ref_twice")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(sim.stats().await.duplicate_refunds, 0);
    assert_eq!(
        sim.refund("re-y", &charge, 1_000, "ref_twice")
            .await
            .status(),
        StatusCode::OK
    );
    let stats = sim.stats().await;
    assert_eq!((stats.refunds, stats.duplicate_refunds), (2, 1));
    sim.stop().await;
}

#[tokio::test]
async fn a_refund_key_never_collides_with_a_charge_key() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    // `approved_charge` used a fresh key; charge again with a fixed one and
    // refund with the very same key.
    let mut body = support::charge_body("tok_visa", "pay_shared");
    body["amount"] = json!(3_000);
    assert_eq!(sim.charge("shared", &body).await.status(), StatusCode::OK);
    let response = sim.refund("shared", &charge, 1_000, "ref_shared").await;
    assert_eq!(response.status(), StatusCode::OK);
    let refund: RefundSucceeded = response.json().await.expect("refund body");
    assert_eq!(refund.charge, charge);
    let stats = sim.stats().await;
    assert_eq!((stats.charges, stats.refunds, stats.replays), (2, 1, 0));
    sim.stop().await;
}

#[tokio::test]
async fn a_malformed_refund_is_rejected_before_anything_happens() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    for body in [
        refund_body(&charge, 0, "ref_bad"),
        refund_body(&charge, -1, "ref_bad"),
        refund_body(&charge, 1, ""),
        refund_body("", 1, "ref_bad"),
    ] {
        let response = sim.post(REFUNDS, "re-bad", Some(&body)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(response).await, "invalid_request");
    }
    let response = sim
        .post(
            REFUNDS,
            "re-bad",
            Some(&json!({"charge": charge, "amount": 1})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_json");
    let response = sim
        .client
        .post(sim.url(REFUNDS))
        .json(&refund_body(&charge, 1, "ref_bad"))
        .send()
        .await
        .expect("refund request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "missing_idempotency_key");

    let response = sim.lookup(REFUNDS, "re-bad").await;
    assert_eq!(not_found_code(response).await, OPERATION_NOT_FOUND_CODE);
    assert_eq!(sim.stats().await.refunds, 0);
    sim.stop().await;
}

#[tokio::test]
async fn faults_refuse_a_refund_before_it_is_paid_and_a_retry_succeeds() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    sim.set_faults(json!({"outage": true})).await;
    let response = sim.refund("re-f", &charge, 1_000, "ref_f").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(response).await, "processor_unavailable");

    sim.set_faults(json!({"outage": false, "error_rate": 1.0}))
        .await;
    let response = sim.refund("re-f", &charge, 1_000, "ref_f").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(response).await, "processor_error");
    assert_eq!(sim.stats().await.refunds, 0);
    let response = sim.lookup(REFUNDS, "re-f").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    sim.set_faults(json!({"error_rate": 0.0, "latency_ms": 200}))
        .await;
    let response = sim.lookup(REFUNDS, "re-f").await;
    assert_eq!(not_found_code(response).await, OPERATION_NOT_FOUND_CODE);
    let started = Instant::now();
    let response = sim.refund("re-f", &charge, 1_000, "ref_f").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(response.status(), StatusCode::OK);
    let stats = sim.stats().await;
    assert_eq!((stats.refunds, stats.replays), (1, 0));
    sim.stop().await;
}

#[tokio::test]
async fn a_refund_whose_answer_timed_out_was_paid_and_its_lookup_returns_it() {
    let sim = TestSim::start().await;
    let charge = sim.approved_charge("tok_visa", 10_000, true).await;
    sim.set_faults(json!({"timeout_rate": 1.0})).await;
    let error = sim
        .post_with(
            &impatient_client(),
            REFUNDS,
            "re-lost",
            Some(&refund_body(&charge, 4_000, "ref_lost")),
        )
        .await
        .expect_err("the answer is held back past the client's timeout");
    assert!(error.is_timeout(), "{error}");
    sim.wait_for_stats(|stats| stats.refunds == 1).await;

    // The timeout fault is still on; lookups do not suffer it.
    let found = sim.lookup(REFUNDS, "re-lost").await;
    assert_eq!(found.status(), StatusCode::OK);
    let found: RefundSucceeded = found.json().await.expect("refund body");
    assert_eq!(
        (found.amount, found.reference.as_str()),
        (4_000, "ref_lost")
    );

    sim.set_faults(json!({"timeout_rate": 0.0})).await;
    let replayed: RefundSucceeded = sim
        .refund("re-lost", &charge, 4_000, "ref_lost")
        .await
        .json()
        .await
        .expect("refund body");
    assert_eq!(replayed.id, found.id);
    let stats = sim.stats().await;
    assert_eq!(
        (stats.refunds, stats.duplicate_refunds, stats.over_refunds),
        (1, 0, 0)
    );
    sim.stop().await;
}
