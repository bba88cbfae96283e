//! The simulator over real HTTP: started on port 0, driven with reqwest, as
//! the worker will drive it.

mod support;

use std::time::{Duration, Instant};

use common::processor::{ChargeApproved, ChargeDeclined, Faults, SimStats, IDEMPOTENCY_HEADER};
use reqwest::StatusCode;
use serde_json::{json, Value};

use support::{charge_body, error_code, impatient_client, TestSim};

#[tokio::test]
async fn each_approving_token_returns_its_card_details() {
    let sim = TestSim::start().await;
    let cases = [
        ("tok_visa", "4242", "visa", "credit"),
        ("tok_visa_debit", "5556", "visa", "debit"),
        ("tok_mastercard", "4444", "mastercard", "credit"),
        ("tok_amex", "0005", "amex", "credit"),
        ("tok_anything_else", "4242", "visa", "credit"),
    ];
    for (i, (token, last4, brand, funding)) in cases.into_iter().enumerate() {
        let response = sim
            .charge(
                &format!("key-{i}"),
                &charge_body(token, &format!("pay_{i}")),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{token}");
        let charge: ChargeApproved = response.json().await.expect("approved body");
        assert!(charge.approved, "{token}");
        assert!(charge.captured, "{token}");
        assert!(charge.id.starts_with("ch_"), "{}", charge.id);
        assert_eq!(charge.card.last4, last4, "{token}");
        assert_eq!(charge.card.brand, brand, "{token}");
        assert_eq!(charge.card.funding, funding, "{token}");
        assert_eq!(charge.card.country, "US", "{token}");
        assert_eq!((charge.card.exp_month, charge.card.exp_year), (12, 2030));
        assert_eq!(charge.card.fingerprint.len(), 16);
        assert!(charge
            .card
            .fingerprint
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(charge.authorization_code.len(), 6);
        assert!(charge
            .authorization_code
            .chars()
            .all(|c| c.is_ascii_digit()));
        assert_eq!(charge.network_transaction_id.len(), 15);
        assert!(charge
            .network_transaction_id
            .chars()
            .all(|c| c.is_ascii_digit()));
        assert_eq!(
            (charge.avs_result.as_str(), charge.cvv_result.as_str()),
            ("Y", "M")
        );
        assert!(charge.risk_score <= 99);
    }
    let stats = sim.stats().await;
    assert_eq!(stats.charges, 5);
    assert_eq!(stats.duplicate_charges, 0);
    sim.stop().await;
}

#[tokio::test]
async fn an_authorisation_without_capture_is_not_captured() {
    let sim = TestSim::start().await;
    let mut body = charge_body("tok_visa", "pay_auth");
    body["capture"] = json!(false);
    let response = sim.charge("key-auth", &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let charge: ChargeApproved = response.json().await.expect("approved body");
    assert!(charge.approved);
    assert!(!charge.captured);
    sim.stop().await;
}

#[tokio::test]
async fn the_same_card_always_has_the_same_fingerprint_and_other_cards_another() {
    let sim = TestSim::start().await;
    let mut fingerprints = Vec::new();
    for (i, token) in ["tok_visa", "tok_visa", "tok_visa_debit", "tok_mastercard"]
        .into_iter()
        .enumerate()
    {
        let charge: ChargeApproved = sim
            .charge(
                &format!("fp-{i}"),
                &charge_body(token, &format!("pay_fp{i}")),
            )
            .await
            .json()
            .await
            .expect("approved body");
        fingerprints.push(charge.card.fingerprint);
    }
    assert_eq!(fingerprints[0], fingerprints[1]);
    assert_ne!(fingerprints[0], fingerprints[2]);
    assert_ne!(fingerprints[0], fingerprints[3]);
    assert_ne!(fingerprints[2], fingerprints[3]);
    sim.stop().await;
}

#[tokio::test]
async fn each_declining_token_returns_402_with_its_codes() {
    let sim = TestSim::start().await;
    let cases = [
        ("tok_chargeDeclined", "card_declined", "generic_decline"),
        (
            "tok_chargeDeclinedInsufficientFunds",
            "card_declined",
            "insufficient_funds",
        ),
        (
            "tok_chargeDeclinedIncorrectCvc",
            "incorrect_cvc",
            "incorrect_cvc",
        ),
        (
            "tok_chargeDeclinedExpiredCard",
            "expired_card",
            "expired_card",
        ),
        (
            "tok_chargeDeclinedProcessingError",
            "processing_error",
            "processing_error",
        ),
    ];
    for (i, (token, code, decline_code)) in cases.into_iter().enumerate() {
        let response = sim
            .charge(
                &format!("decline-{i}"),
                &charge_body(token, &format!("pay_d{i}")),
            )
            .await;
        assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED, "{token}");
        let declined: ChargeDeclined = response.json().await.expect("declined body");
        assert!(!declined.approved, "{token}");
        assert_eq!(declined.code, code, "{token}");
        assert_eq!(declined.decline_code, decline_code, "{token}");
        assert!(!declined.message.is_empty(), "{token}");
        assert!(declined.id.starts_with("ch_"), "{}", declined.id);
        assert_eq!(declined.card.last4, "4242", "{token}");
        assert_eq!(declined.card.brand, "visa", "{token}");
    }
    let stats = sim.stats().await;
    assert_eq!(stats.declines, 5);
    assert_eq!(stats.charges, 0);
    sim.stop().await;
}

#[tokio::test]
async fn a_repeated_key_returns_the_identical_answer_without_charging_again() {
    let sim = TestSim::start().await;
    let body = charge_body("tok_visa", "pay_repeat");
    assert_same_answer_twice(&sim, "key-repeat", &body, StatusCode::OK).await;

    let stats = sim.stats().await;
    assert_eq!(stats.charges, 1);
    assert_eq!(stats.replays, 1);
    assert_eq!(stats.requests, 2);
    sim.stop().await;
}

#[tokio::test]
async fn a_repeated_key_replays_a_decline_with_its_status() {
    let sim = TestSim::start().await;
    let body = charge_body("tok_chargeDeclined", "pay_declined_twice");
    assert_same_answer_twice(&sim, "key-decline", &body, StatusCode::PAYMENT_REQUIRED).await;

    let stats = sim.stats().await;
    assert_eq!((stats.declines, stats.replays), (1, 1));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_requests_with_one_key_charge_exactly_once() {
    let sim = TestSim::start().await;
    // Latency keeps the first request charging while the other nine arrive.
    sim.set_faults(json!({"latency_ms": 50})).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let client = sim.client.clone();
        let url = sim.url("/v1/charges");
        requests.spawn(async move {
            let response = client
                .post(url)
                .header(IDEMPOTENCY_HEADER, "key-concurrent")
                .json(&charge_body("tok_visa", "pay_concurrent"))
                .send()
                .await
                .expect("charge request");
            assert_eq!(response.status(), StatusCode::OK);
            let charge: ChargeApproved = response.json().await.expect("approved body");
            charge.id
        });
    }
    let ids = requests.join_all().await;
    assert_eq!(ids.len(), 10);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    let stats = sim.stats().await;
    assert_eq!(stats.charges, 1);
    assert_eq!(stats.replays, 9);
    assert_eq!(stats.duplicate_charges, 0);
    sim.stop().await;
}

#[tokio::test]
async fn two_keys_for_the_same_reference_count_as_a_duplicate_charge() {
    let sim = TestSim::start().await;
    let body = charge_body("tok_visa", "pay_charged_twice");
    assert_eq!(sim.charge("key-a", &body).await.status(), StatusCode::OK);
    assert_eq!(sim.stats().await.duplicate_charges, 0);
    assert_eq!(sim.charge("key-b", &body).await.status(), StatusCode::OK);
    assert_eq!(sim.stats().await.duplicate_charges, 1);
    // A third charge is still the same one duplicated payment.
    assert_eq!(sim.charge("key-c", &body).await.status(), StatusCode::OK);

    let stats = sim.stats().await;
    assert_eq!(stats.charges, 3);
    assert_eq!(stats.duplicate_charges, 1);
    sim.stop().await;
}

#[tokio::test]
async fn an_outage_answers_503_and_charges_nothing() {
    let sim = TestSim::start().await;
    let faults = sim.set_faults(json!({"outage": true})).await;
    assert!(faults.outage);
    let body = charge_body("tok_visa", "pay_outage");
    let response = sim.charge("key-outage", &body).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(response).await, "processor_unavailable");
    let stats = sim.stats().await;
    assert_eq!((stats.charges, stats.requests), (0, 1));

    sim.set_faults(json!({"outage": false})).await;
    assert_eq!(
        sim.charge("key-outage", &body).await.status(),
        StatusCode::OK
    );
    let stats = sim.stats().await;
    assert_eq!((stats.charges, stats.replays), (1, 0));
    sim.stop().await;
}

#[tokio::test]
async fn an_injected_error_charges_nothing_and_a_retry_with_the_same_key_succeeds() {
    let sim = TestSim::start().await;
    sim.set_faults(json!({"error_rate": 1.0})).await;
    let body = charge_body("tok_visa", "pay_error");
    let response = sim.charge("key-error", &body).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(response).await, "processor_error");
    assert_eq!(sim.stats().await.charges, 0);

    sim.set_faults(json!({"error_rate": 0.0})).await;
    let response = sim.charge("key-error", &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stats = sim.stats().await;
    assert_eq!(stats.charges, 1);
    assert_eq!(stats.replays, 0);
    assert_eq!(stats.requests, 2);
    sim.stop().await;
}

#[tokio::test]
async fn a_timed_out_charge_has_happened_and_a_retry_gets_the_stored_charge() {
    let sim = TestSim::start().await;
    sim.set_faults(json!({"timeout_rate": 1.0})).await;
    let body = charge_body("tok_visa", "pay_timeout");
    let impatient = impatient_client();
    let error = sim
        .charge_with(&impatient, "key-timeout", &body)
        .await
        .expect_err("the answer is held back past the client's timeout");
    assert!(error.is_timeout(), "{error}");
    // The outcome was unknown to the client, but the charge happened.
    sim.wait_for_stats(|stats| stats.charges == 1).await;

    sim.set_faults(json!({"timeout_rate": 0.0})).await;
    let retry = sim.charge("key-timeout", &body).await;
    assert_eq!(retry.status(), StatusCode::OK);
    let retry: ChargeApproved = retry.json().await.expect("approved body");
    let again: ChargeApproved = sim
        .charge("key-timeout", &body)
        .await
        .json()
        .await
        .expect("approved body");
    assert_eq!(again.id, retry.id);

    let stats = sim.stats().await;
    assert_eq!(stats.charges, 1);
    assert_eq!(stats.replays, 2);
    assert_eq!(stats.duplicate_charges, 0);
    sim.stop().await;
}

#[tokio::test]
async fn shutdown_cuts_short_an_answer_held_back_by_the_timeout_fault() {
    let sim = TestSim::start().await;
    sim.set_faults(json!({"timeout_rate": 1.0})).await;
    let client = sim.client.clone();
    let url = sim.url("/v1/charges");
    let pending = tokio::spawn(async move {
        client
            .post(url)
            .header(IDEMPOTENCY_HEADER, "key-held")
            .json(&charge_body("tok_visa", "pay_held"))
            .send()
            .await
    });
    sim.wait_for_stats(|stats| stats.charges == 1).await;
    let started = Instant::now();
    sim.stop().await;
    // Far below the 30 s the answer would otherwise be held.
    assert!(started.elapsed() < Duration::from_secs(10));
    let response = pending.await.expect("client task").expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn latency_delays_every_charge_by_at_least_the_setting() {
    let sim = TestSim::start().await;
    let faults = sim.set_faults(json!({"latency_ms": 250})).await;
    assert_eq!(faults.latency_ms, 250);
    let started = Instant::now();
    let response = sim
        .charge("key-latency", &charge_body("tok_visa", "pay_latency"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    sim.stop().await;
}

#[tokio::test]
async fn faults_update_partially_and_read_back() {
    let sim = TestSim::start().await;
    sim.set_faults(json!({"error_rate": 0.25, "latency_ms": 5}))
        .await;
    let faults = sim.set_faults(json!({"outage": true})).await;
    let expected = Faults {
        error_rate: 0.25,
        timeout_rate: 0.0,
        latency_ms: 5,
        outage: true,
    };
    assert_eq!(faults, expected);
    let read: Faults = sim.faults().await;
    assert_eq!(read, expected);
    sim.stop().await;
}

#[tokio::test]
async fn an_out_of_range_rate_is_rejected_and_changes_nothing() {
    let sim = TestSim::start().await;
    for update in [
        json!({"error_rate": 2.0}),
        json!({"timeout_rate": -0.1}),
        json!({"latency_ms": 10, "error_rate": 1.5}),
    ] {
        let response = sim.put_faults(update.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{update}");
        assert_eq!(error_code(response).await, "invalid_request");
    }
    let response = sim.put_faults(json!({"no_such_fault": true})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_json");

    let faults: Faults = sim.faults().await;
    assert_eq!(faults, Faults::default());
    sim.stop().await;
}

#[tokio::test]
async fn a_charge_without_an_idempotency_key_is_rejected() {
    let sim = TestSim::start().await;
    let body = charge_body("tok_visa", "pay_no_key");
    let response = sim
        .client
        .post(sim.url("/v1/charges"))
        .json(&body)
        .send()
        .await
        .expect("charge request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "missing_idempotency_key");

    let response = sim.charge("", &body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "missing_idempotency_key");

    let stats = sim.stats().await;
    assert_eq!((stats.charges, stats.requests), (0, 2));
    sim.stop().await;
}

#[tokio::test]
async fn an_invalid_charge_request_is_rejected_without_charging() {
    let sim = TestSim::start().await;
    let mut zero = charge_body("tok_visa", "pay_zero");
    zero["amount"] = json!(0);
    let response = sim.charge("key-zero", &zero).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_request");

    let response = sim
        .charge("key-card", &charge_body("4242424242424242", "pay_card"))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_request");

    let response = sim
        .client
        .post(sim.url("/v1/charges"))
        .header(IDEMPOTENCY_HEADER, "key-garbage")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("charge request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_json");

    assert_eq!(sim.stats().await.charges, 0);
    sim.stop().await;
}

#[tokio::test]
async fn reset_clears_stats_stored_charges_and_faults() {
    let sim = TestSim::start().await;
    let body = charge_body("tok_visa", "pay_reset");
    let first: ChargeApproved = sim
        .charge("key-reset", &body)
        .await
        .json()
        .await
        .expect("approved body");
    sim.set_faults(json!({"latency_ms": 5, "error_rate": 0.5}))
        .await;

    sim.reset().await;
    assert_eq!(sim.stats().await, SimStats::default());
    let faults: Faults = sim.faults().await;
    assert_eq!(faults, Faults::default());

    // The stored charge is forgotten: the same key charges anew.
    let second: ChargeApproved = sim
        .charge("key-reset", &body)
        .await
        .json()
        .await
        .expect("approved body");
    assert_ne!(second.id, first.id);
    let stats = sim.stats().await;
    assert_eq!(
        (stats.charges, stats.replays, stats.duplicate_charges),
        (1, 0, 0)
    );
    sim.stop().await;
}

#[tokio::test]
async fn healthz_answers_ok() {
    let sim = TestSim::start().await;
    let response = sim
        .client
        .get(sim.url("/healthz"))
        .send()
        .await
        .expect("healthz request");
    assert_eq!(response.status(), StatusCode::OK);
    sim.stop().await;
}

/// Charges `body` twice with `key`: both answers have `status`, and the
/// second is the first word for word.
async fn assert_same_answer_twice(sim: &TestSim, key: &str, body: &Value, status: StatusCode) {
    let first = sim.charge(key, body).await;
    assert_eq!(first.status(), status);
    let first = first.text().await.expect("first body");
    let second = sim.charge(key, body).await;
    assert_eq!(second.status(), status);
    assert_eq!(second.text().await.expect("second body"), first);
}
