//! What every simulator test needs: a simulator started on port 0 and
//! driven over real HTTP with reqwest, as the worker drives it.
//!
//! Each test binary uses a different part of this module, so unused items
//! are expected in some of them.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use common::processor::{
    ChargeApproved, Faults, ProcessorErrorBody, SimStats, IDEMPOTENCY_HEADER, LOOKUP_QUERY_PARAM,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A simulator running in this test, stopped by [`TestSim::stop`].
pub struct TestSim {
    base: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl TestSim {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(processor_sim::serve(listener, shutdown.clone()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client");
        Self {
            base: format!("http://{addr}"),
            client,
            shutdown,
            server,
        }
    }

    /// Cancels the token and waits for the server to finish; a server that
    /// does not stop promptly fails the test.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the simulator stops promptly")
            .expect("server task")
            .expect("serve returns Ok");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn charge(&self, key: &str, body: &Value) -> reqwest::Response {
        self.charge_with(&self.client, key, body)
            .await
            .expect("charge request")
    }

    pub async fn charge_with(
        &self,
        client: &reqwest::Client,
        key: &str,
        body: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        client
            .post(self.url("/v1/charges"))
            .header(IDEMPOTENCY_HEADER, key)
            .json(body)
            .send()
            .await
    }

    /// `POST <path>` with an `Idempotency-Key` and, if given, a JSON body.
    pub async fn post(&self, path: &str, key: &str, body: Option<&Value>) -> reqwest::Response {
        self.post_with(&self.client, path, key, body)
            .await
            .expect("post request")
    }

    pub async fn post_with(
        &self,
        client: &reqwest::Client,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> reqwest::Result<reqwest::Response> {
        let request = client.post(self.url(path)).header(IDEMPOTENCY_HEADER, key);
        match body {
            Some(body) => request.json(body),
            None => request,
        }
        .send()
        .await
    }

    /// An approved charge of `amount` on `token`, captured at once or only
    /// authorized; its id. Key and reference are fresh.
    pub async fn approved_charge(&self, token: &str, amount: i64, capture: bool) -> String {
        let reference = format!("pay_{}", uuid::Uuid::new_v4().simple());
        let mut body = charge_body(token, &reference);
        body["amount"] = json!(amount);
        body["capture"] = json!(capture);
        let response = self.charge(&reference, &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let charge: ChargeApproved = response.json().await.expect("approved body");
        charge.id
    }

    /// An authorization (`capture: false`) of `amount` on `tok_visa`.
    pub async fn authorize(&self, amount: i64) -> String {
        self.approved_charge("tok_visa", amount, false).await
    }

    /// `POST /v1/charges/<charge>/capture`.
    pub async fn capture(
        &self,
        charge: &str,
        key: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        self.post(&capture_path(charge), key, body).await
    }

    /// `POST /v1/charges/<charge>/void` without a body.
    pub async fn void(&self, charge: &str, key: &str) -> reqwest::Response {
        self.post(&void_path(charge), key, None).await
    }

    /// `POST /v1/refunds`.
    pub async fn refund(
        &self,
        key: &str,
        charge: &str,
        amount: i64,
        reference: &str,
    ) -> reqwest::Response {
        self.post(REFUNDS, key, Some(&refund_body(charge, amount, reference)))
            .await
    }

    /// `GET <path>?idempotency_key=<key>`: the lookup of an operation.
    pub async fn lookup(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .query(&[(LOOKUP_QUERY_PARAM, key)])
            .send()
            .await
            .expect("lookup request")
    }

    pub async fn stats(&self) -> SimStats {
        self.client
            .get(self.url("/_sim/stats"))
            .send()
            .await
            .expect("stats request")
            .json()
            .await
            .expect("stats body")
    }

    /// `GET /_sim/faults`: the faults in force.
    pub async fn faults(&self) -> Faults {
        self.client
            .get(self.url("/_sim/faults"))
            .send()
            .await
            .expect("faults request")
            .json()
            .await
            .expect("faults body")
    }

    /// `POST /_sim/reset`, which must succeed.
    pub async fn reset(&self) {
        let response = self
            .client
            .post(self.url("/_sim/reset"))
            .send()
            .await
            .expect("reset request");
        assert!(response.status().is_success());
    }

    pub async fn put_faults(&self, update: Value) -> reqwest::Response {
        self.client
            .put(self.url("/_sim/faults"))
            .json(&update)
            .send()
            .await
            .expect("faults request")
    }

    pub async fn set_faults(&self, update: Value) -> Faults {
        let response = self.put_faults(update).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("faults body")
    }

    /// Polls the stats until `done` holds, failing after a deadline.
    pub async fn wait_for_stats(&self, done: impl Fn(&SimStats) -> bool) -> SimStats {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "stats never got there: {stats:?}"
            );
            tokio::task::yield_now().await;
        }
    }
}

pub fn charge_body(token: &str, reference: &str) -> Value {
    json!({
        "amount": 1999,
        "currency": "USD",
        "token": token,
        "capture": true,
        "description": "Order 42",
        "statement_descriptor": "EXAMPLE SHOP",
        "reference": reference,
    })
}

pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("error body");
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
        .to_owned()
}

pub const REFUNDS: &str = "/v1/refunds";

pub fn capture_path(charge: &str) -> String {
    format!("/v1/charges/{charge}/capture")
}

pub fn void_path(charge: &str) -> String {
    format!("/v1/charges/{charge}/void")
}

pub fn refund_body(charge: &str, amount: i64, reference: &str) -> Value {
    json!({"charge": charge, "amount": amount, "reference": reference})
}

/// A client that gives up after 300 ms, to lose answers the timeout fault
/// holds back.
pub fn impatient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("http client")
}

/// The `error.code` of a `404`, read through the shared envelope type as a
/// client would; panics if the body is not the envelope.
pub async fn not_found_code(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: ProcessorErrorBody = response.json().await.expect("error envelope");
    body.error.code
}
