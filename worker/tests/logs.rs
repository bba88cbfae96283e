//! No card token, API key or customer e-mail in any log line. A whole run
//! (API, worker, simulator, all in this process) logs at debug level into a
//! buffer, which is then searched for the secrets it handled.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::telemetry::LogFormat;
use serde_json::json;
use testkit::{payment_body, TestApp};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_of_a_full_run_contains_a_card_token_an_api_key_or_an_email() {
    let capture = Capture::default();
    let writer = capture.clone();
    common::telemetry::init_with_writer(LogFormat::Json, "debug", move || writer.clone());

    let app = TestApp::spawn().await;
    let token = "tok_secretCard9f3aQ";
    let email = "jane.secret@example.com";
    let wrong_key = "sk_wrongSecretKey7781";

    let mut body = payment_body(token);
    body["customer"] = json!({"email": email, "name": "Jane Secretname"});
    let response = app
        .post_payment_with(
            &body,
            &[("Prefer", "wait=10"), ("Idempotency-Key", "log-test")],
        )
        .await;
    assert_eq!(response.status(), 200);
    let paid: serde_json::Value = response.json().await.expect("json");
    let payment_id = paid["id"].as_str().expect("id").to_owned();
    // Replayed, then rejected requests that carry the secrets too.
    let replay = app
        .post_payment_with(&body, &[("Idempotency-Key", "log-test")])
        .await;
    assert_eq!(
        replay.status(),
        202,
        "the stored response, as at acceptance"
    );
    let mut invalid = body.clone();
    invalid["payment_method"]["card"]["token"] = json!("tok_secret but invalid!");
    assert_eq!(app.post_payment(&invalid).await.status(), 400);
    let unauthorized = app
        .http
        .post(format!("{}/v1/payments", app.api_url))
        .bearer_auth(wrong_key)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(unauthorized.status(), 401);
    app.set_faults(json!({"error_rate": 1.0})).await;
    let retried = app.create_payment(token).await;
    app.eventually(
        "a retry of the failing charge",
        Duration::from_secs(20),
        || async {
            let payment = app.payment(&retried).await;
            (payment["attempts"].as_i64() >= Some(1) && payment["status"] == "pending")
                .then_some(())
        },
    )
    .await;
    let key = app.key.clone();
    app.cleanup().await;

    let logs = String::from_utf8(capture.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .expect("utf-8 logs");
    // The capture works: the run's own identifiers are there.
    assert!(logs.contains(&payment_id), "the payment id is logged");
    assert!(logs.contains("request_id"), "request ids are logged");
    assert!(
        logs.lines().count() > 20,
        "a full run logs plenty at debug level"
    );
    for secret in [
        token,
        "tok_secret but invalid!",
        email,
        "Secretname",
        key.as_str(),
        wrong_key,
    ] {
        let line = logs.lines().find(|line| line.contains(secret));
        assert!(
            line.is_none(),
            "a log line contains a secret ({secret}): {line:?}"
        );
    }
}
