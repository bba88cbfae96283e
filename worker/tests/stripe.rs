//! The Stripe adapter (DESIGN.md section 13) against localstripe, a fake,
//! stateful Stripe server nobody here wrote: the real `worker` binary with
//! `PROCESSOR=stripe` charges, declines, authorizes and captures, voids and
//! refunds; each outcome is checked on our `GET` and on localstripe's own
//! objects. A proxy that loses Stripe's answer proves that an unknown
//! outcome is settled by finding the PaymentIntent by its metadata
//! (localstripe ignores `Idempotency-Key`, so a resend would charge twice).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::localstripe::TEST_KEY;
use testkit::{payment_body, payment_of, LocalStripe, Options, Proxy, TestApp};
use worker::{ProcessorKind, SecretKey, StripeArgs};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker");

/// localstripe's test cards.
const VISA: &str = "4242424242424242";
/// Declined when a PaymentIntent is confirmed with it.
const DECLINED_ON_CHARGE: &str = "4000000000000341";
/// Asks for 3-D Secure authentication (`requires_action`).
const THREE_D_SECURE: &str = "4000002500003155";

/// One test's system: the API in-process, localstripe, and a worker
/// process talking to it (through `proxy` when asked).
struct System {
    /// First, so it is killed before what it talks to goes away.
    _worker: tokio::process::Child,
    app: TestApp,
    stripe: LocalStripe,
    proxy: Option<Proxy>,
}

impl System {
    async fn start() -> Self {
        Self::with(TEST_KEY, false).await
    }

    async fn with(key: &str, through_proxy: bool) -> Self {
        let stripe = LocalStripe::start().await.expect("localstripe starts");
        let proxy = if through_proxy {
            Some(Proxy::start(stripe.addr()).await.expect("proxy"))
        } else {
            None
        };
        let base = proxy
            .as_ref()
            .map_or_else(|| stripe.url(), |p| format!("http://{}", p.addr()));
        let mut worker = testkit::fast_worker_settings();
        worker.processor = ProcessorKind::Stripe;
        worker.stripe = StripeArgs {
            stripe_api_base: base,
            stripe_secret_key: Some(SecretKey::new(key)),
        };
        // localstripe is a Python process on a shared machine: give its
        // answers time, so only the proxy makes an outcome unknown.
        worker.processor_timeout = Duration::from_secs(5);
        worker.lease = Duration::from_secs(20);
        let app = TestApp::with(Options {
            worker,
            ..Options::api_only()
        })
        .await;
        let worker = app.worker_command(WORKER_BIN).spawn().expect("worker");
        Self {
            _worker: worker,
            app,
            stripe,
            proxy,
        }
    }

    /// Creates a payment of `amount` with a PaymentMethod of `card` and
    /// waits until it is terminal; the payment as `GET` shows it.
    async fn pay(&self, card: &str, amount: i64, capture: bool) -> Value {
        let pm = self.stripe.payment_method(card).await.expect("pm");
        let id = self
            .app
            .create_payment_as(&self.app.key, &payment_of(&pm, amount, capture))
            .await;
        self.terminal(&id).await
    }

    async fn terminal(&self, id: &str) -> Value {
        self.app
            .wait_payment(id, "the payment terminal", |p| {
                p["status"] != "pending" && p["status"] != "processing"
            })
            .await
    }

    /// The one PaymentIntent localstripe holds for `payment`.
    async fn only_intent(&self, payment: &Value) -> Value {
        let id = payment["id"].as_str().expect("id");
        let intents = self.stripe.payment_intents_of(id).await.expect("list");
        assert_eq!(
            intents.len(),
            1,
            "one PaymentIntent per payment: {intents:?}"
        );
        intents.into_iter().next().expect("one")
    }

    async fn refund(&self, payment: &str, amount: i64) -> Value {
        let (status, refund) = self
            .app
            .post(
                &format!("/v1/payments/{payment}/refund"),
                json!({"amount": amount, "reason": "requested_by_customer"}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{refund}");
        let id = refund["id"].as_str().expect("id").to_owned();
        self.app
            .eventually("the refund done", Duration::from_secs(30), || async {
                let (_, refund) = self.app.get(&format!("/v1/refunds/{id}")).await;
                (refund["status"] != "pending").then_some(refund)
            })
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_payment_is_charged_at_stripe_with_one_payment_intent_and_its_card_recorded() {
    let system = System::start().await;
    let pm = system.stripe.payment_method(VISA).await.expect("pm");
    let id = system
        .app
        .create_payment_as(&system.app.key, &payment_body(&pm))
        .await;
    let payment = system.terminal(&id).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["captured"], true, "{payment}");
    assert_eq!(payment["amount_captured"], 15000, "{payment}");
    let card = &payment["payment_method"]["card"];
    assert_eq!(card["last4"], "4242", "{payment}");
    assert_eq!(card["brand"], "visa", "{payment}");
    assert_eq!(card["exp_month"], 12, "{payment}");
    assert_eq!(card["exp_year"], 2030, "{payment}");
    assert!(card["fingerprint"].as_str().is_some_and(|f| !f.is_empty()));
    assert_eq!(card["funding"], "credit", "{payment}");
    let response = &payment["processor_response"];
    assert_eq!(response["processor"], "stripe", "{payment}");
    assert_eq!(response["approved"], true, "{payment}");

    let intent = system.only_intent(&payment).await;
    assert_eq!(intent["status"], "succeeded", "{intent}");
    assert_eq!(intent["amount"], 15000);
    assert_eq!(intent["currency"], "usd", "currency in lower case");
    assert_eq!(intent["capture_method"], "automatic");
    assert_eq!(intent["payment_method"], pm.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_stripe_declines_fails_the_payment_with_stripes_code() {
    let system = System::start().await;
    let payment = system.pay(DECLINED_ON_CHARGE, 2_000, true).await;
    assert_eq!(payment["status"], "failed", "{payment}");
    assert_eq!(payment["failure_code"], "card_declined", "{payment}");
    assert_eq!(
        payment["processor_response"]["decline_code"], "card_declined",
        "{payment}"
    );
    assert_eq!(payment["processor_response"]["approved"], false);
    assert_eq!(
        payment["payment_method"]["card"]["last4"], "0341",
        "{payment}"
    );
    let intent = system.only_intent(&payment).await;
    assert_ne!(intent["status"], "succeeded", "{intent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_is_captured_in_part_at_stripe() {
    let system = System::start().await;
    let payment = system.pay(VISA, 10_000, false).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["captured"], false, "{payment}");
    assert_eq!(payment["amount_capturable"], 10_000, "{payment}");
    let intent = system.only_intent(&payment).await;
    assert_eq!(intent["status"], "requires_capture", "{intent}");
    assert_eq!(intent["capture_method"], "manual");

    let id = payment["id"].as_str().expect("id");
    let (status, body) = system
        .app
        .post_with(
            &format!("/v1/payments/{id}/capture"),
            json!({"amount": 6_000}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["captured"], true, "{body}");
    assert_eq!(body["amount_captured"], 6_000, "{body}");
    assert_eq!(body["amount_capturable"], 0, "{body}");
    let intent = system.only_intent(&payment).await;
    assert_eq!(intent["status"], "succeeded", "{intent}");
    // localstripe records the released rest as a refund of the charge
    // (Stripe does not); either way 6,000 of 10,000 moved.
    let charge = &intent["latest_charge"];
    let moved = charge["amount"].as_i64().unwrap_or_default()
        - charge["amount_refunded"].as_i64().unwrap_or_default();
    assert_eq!(moved, 6_000, "{intent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_cancels_the_payment_intent_at_stripe() {
    let system = System::start().await;
    let payment = system.pay(VISA, 4_000, false).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    let id = payment["id"].as_str().expect("id");
    let (status, body) = system
        .app
        .post_with(
            &format!("/v1/payments/{id}/cancel"),
            json!({"reason": "requested_by_customer"}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    let intent = system.only_intent(&payment).await;
    assert_eq!(intent["status"], "canceled", "{intent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_and_multiple_refunds_are_refunds_of_the_payment_intent_each_once() {
    let system = System::start().await;
    let payment = system.pay(VISA, 10_000, true).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    let id = payment["id"].as_str().expect("id");
    let first = system.refund(id, 3_000).await;
    let second = system.refund(id, 2_000).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(second["status"], "succeeded", "{second}");
    assert!(first["processor_refund_id"]
        .as_str()
        .is_some_and(|r| r.starts_with("re_")));
    let after = system.app.payment(id).await;
    assert_eq!(after["amount_refunded"], 5_000, "{after}");

    let intent = system.only_intent(&payment).await;
    let pi = intent["id"].as_str().expect("pi");
    let refunds = system.stripe.refunds_of(pi).await.expect("refunds");
    assert_eq!(refunds.len(), 2, "{refunds:?}");
    let mut amounts: Vec<i64> = refunds
        .iter()
        .filter_map(|r| r["amount"].as_i64())
        .collect();
    amounts.sort_unstable();
    assert_eq!(amounts, vec![2_000, 3_000]);
    for refund in &refunds {
        assert_eq!(refund["metadata"]["payment_id"], id, "{refund}");
        assert_eq!(refund["payment_intent"], pi, "{refund}");
    }
    let ours: Vec<&Value> = refunds
        .iter()
        .map(|r| &r["metadata"]["operation_id"])
        .collect();
    assert!(ours.contains(&&first["id"]), "{refunds:?}");
    assert!(ours.contains(&&second["id"]), "{refunds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_settled_by_finding_the_payment_intent_by_its_metadata_and_charged_once() {
    let system = System::with(TEST_KEY, true).await;
    let proxy = system.proxy.as_ref().expect("proxy");
    proxy.lose_answers(1);
    let payment = system.pay(VISA, 7_500, true).await;
    assert_eq!(proxy.answers_lost(), 1, "the charge's answer was lost");
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["payment_method"]["card"]["last4"], "4242");
    let intent = system.only_intent(&payment).await;
    assert_eq!(intent["amount"], 7_500);
    assert_eq!(intent["status"], "succeeded", "{intent}");
    let confirmed = system
        .app
        .count_where(
            "payment_status_history",
            "reason LIKE '%confirmed after an unknown outcome%'",
        )
        .await;
    assert_eq!(confirmed, 1, "recorded once, after asking Stripe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_stripe_refuses_hold_the_payment_for_an_operator_and_never_fail_it() {
    // localstripe answers 401 to a key that is not `sk_…`.
    let system = System::with("rk_test_wrong", false).await;
    let pm = system.stripe.payment_method(VISA).await.expect("pm");
    let id = system
        .app
        .create_payment_as(&system.app.key, &payment_of(&pm, 1_000, true))
        .await;
    let held = system
        .app
        .wait_payment(&id, "the payment held", |p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("held for an operator"))
        })
        .await;
    assert_eq!(held["status"], "pending", "never failed: {held}");
    let error = held["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("401"), "{error}");
    assert!(error.contains("STRIPE_SECRET_KEY"), "{error}");
    assert!(!error.contains("rk_test_wrong"), "the key is never shown");
    system.app.wait_queue_depth("dead", 1).await;
    assert_eq!(system.app.dead_reasons().await[0], "processor_rejected");
    let intents = system.stripe.payment_intents_of(&id).await.expect("list");
    assert!(intents.is_empty(), "nothing charged: {intents:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stripe_rejects_as_invalid_holds_the_payment_and_never_fails_it() {
    let system = System::start().await;
    // localstripe takes no card token (`payment_method_data`): a 400.
    let id = system
        .app
        .create_payment_as(&system.app.key, &payment_of("tok_visa", 1_000, true))
        .await;
    let held = system
        .app
        .wait_payment(&id, "the payment held", |p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("held for an operator"))
        })
        .await;
    assert_eq!(held["status"], "pending", "never failed: {held}");
    let error = held["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("400"), "{error}");
    assert!(!error.contains("tok_visa"), "the token is never shown");
    let intents = system.stripe.payment_intents_of(&id).await.expect("list");
    assert!(intents.is_empty(), "nothing charged: {intents:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_answer_is_lost_is_found_by_its_operation_id_and_paid_once() {
    let system = System::with(TEST_KEY, true).await;
    let payment = system.pay(VISA, 9_000, true).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    let proxy = system.proxy.as_ref().expect("proxy");
    proxy.lose_answers(1);
    let id = payment["id"].as_str().expect("id");
    let refund = system.refund(id, 4_000).await;
    assert_eq!(proxy.answers_lost(), 1, "the refund's answer was lost");
    assert_eq!(refund["status"], "succeeded", "{refund}");
    let intent = system.only_intent(&payment).await;
    let pi = intent["id"].as_str().expect("pi");
    let refunds = system.stripe.refunds_of(pi).await.expect("refunds");
    assert_eq!(refunds.len(), 1, "paid once: {refunds:?}");
    assert_eq!(refunds[0]["amount"], 4_000);
    assert_eq!(refunds[0]["id"], refund["processor_refund_id"], "{refund}");
}

#[test]
fn the_worker_refuses_to_start_with_stripe_and_no_secret_key_naming_the_setting() {
    let out = std::process::Command::new(WORKER_BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PROCESSOR", "stripe")
        .env("METRICS_BIND", "127.0.0.1:0")
        .output()
        .expect("run the worker");
    assert!(!out.status.success(), "it started without a key");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("STRIPE_SECRET_KEY"), "{stderr}");
}

#[test]
fn the_secret_key_is_never_printed_by_help() {
    let out = std::process::Command::new(WORKER_BIN)
        .arg("--help")
        .env("STRIPE_SECRET_KEY", "sk_test_never_shown")
        .output()
        .expect("run the worker");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("STRIPE_SECRET_KEY"), "{text}");
    assert!(!text.contains("sk_test_never_shown"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_and_a_void_whose_answers_are_lost_are_settled_by_the_payment_intents_status() {
    let system = System::with(TEST_KEY, true).await;
    let proxy = system.proxy.as_ref().expect("proxy");
    let to_capture = system.pay(VISA, 8_000, false).await;
    let to_void = system.pay(VISA, 3_000, false).await;
    assert_eq!(to_capture["status"], "succeeded", "{to_capture}");
    assert_eq!(to_void["status"], "succeeded", "{to_void}");

    // localstripe answers 400 to a second capture or cancel: only asking
    // first, never resending, ends these as done.
    proxy.lose_answers(1);
    let id = to_capture["id"].as_str().expect("id");
    let (status, captured) = system
        .app
        .post_with(
            &format!("/v1/payments/{id}/capture"),
            json!({"amount": 5_000}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(proxy.answers_lost(), 1, "the capture's answer was lost");
    assert_eq!(captured["amount_captured"], 5_000, "{captured}");
    let intent = system.only_intent(&to_capture).await;
    assert_eq!(intent["status"], "succeeded", "{intent}");

    proxy.lose_answers(1);
    let id = to_void["id"].as_str().expect("id");
    let (status, voided) = system
        .app
        .post_with(
            &format!("/v1/payments/{id}/cancel"),
            json!({}),
            &[("Prefer", "wait=20")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{voided}");
    assert_eq!(proxy.answers_lost(), 2, "the void's answer was lost");
    assert_eq!(voided["status"], "cancelled", "{voided}");
    let intent = system.only_intent(&to_void).await;
    assert_eq!(intent["status"], "canceled", "{intent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_that_asks_for_3d_secure_is_held_with_that_reason_and_never_failed() {
    let system = System::start().await;
    let pm = system
        .stripe
        .payment_method(THREE_D_SECURE)
        .await
        .expect("pm");
    let id = system
        .app
        .create_payment_as(&system.app.key, &payment_of(&pm, 1_200, true))
        .await;
    let held = system
        .app
        .wait_payment(&id, "the payment held", |p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("held for an operator"))
        })
        .await;
    assert_eq!(held["status"], "pending", "never failed: {held}");
    let error = held["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("3-D Secure"), "{error}");
    assert!(error.contains("requires_action"), "{error}");
    let intent = system.only_intent(&held).await;
    assert_eq!(intent["status"], "requires_action", "{intent}");
}
