//! The simulator's adapter (`PROCESSOR=sim`): `processor-sim`'s protocol
//! (`common::processor`) behind [`CardProcessor`]. Every operation is sent
//! with its idempotency key and looked up by that key (`GET` at the
//! operation's path with `?idempotency_key=`).
//!
//! How its answers are sorted: `200` approved, `402` declined, `409`/`400`
//! with a refusal code refused, a lookup's `404 operation_not_found` not
//! found, other 4xx rejected; a timeout, a connection cut after sending, a
//! 5xx other than 503, a 409 "same key in progress" or an answer we cannot
//! read are unknown outcomes; cannot connect, 503 and 429 certainly did not
//! reach it, and only those are retried in-process at once.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use common::db::lifecycle::Knowledge;
use common::processor::{
    CaptureRequest, ChargeRequest, ProcessorErrorBody, RefundRequest, VoidRequest,
    AMOUNT_EXCEEDS_CAPTURABLE_CODE, AMOUNT_EXCEEDS_REFUNDABLE_CODE, CHARGE_NOT_CAPTURABLE_CODE,
    CHARGE_NOT_REFUNDABLE_CODE, CHARGE_NOT_VOIDABLE_CODE, IDEMPOTENCY_HEADER, LOOKUP_QUERY_PARAM,
    OPERATION_NOT_FOUND_CODE,
};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Capture, CardProcessor, Charge, Operation, Outcome, OutcomeOf, Refund, Void};

/// How the simulator addresses an operation.
pub trait SimOperation: Operation<Approved: DeserializeOwned, Declined: DeserializeOwned> {
    type Request: Serialize + Sync;

    /// Path of the operation (`POST`) and of its lookup (`GET` with
    /// `?idempotency_key=`), e.g. `/v1/charges`.
    fn path(&self) -> String;
    fn request(&self) -> &Self::Request;
}

impl SimOperation for Charge {
    type Request = ChargeRequest;
    fn path(&self) -> String {
        "/v1/charges".into()
    }
    fn request(&self) -> &ChargeRequest {
        &self.request
    }
}

impl SimOperation for Capture {
    type Request = CaptureRequest;
    fn path(&self) -> String {
        format!("/v1/charges/{}/capture", self.charge_id)
    }
    fn request(&self) -> &CaptureRequest {
        &self.request
    }
}

impl SimOperation for Void {
    type Request = VoidRequest;
    fn path(&self) -> String {
        format!("/v1/charges/{}/void", self.charge_id)
    }
    fn request(&self) -> &VoidRequest {
        &self.request
    }
}

impl SimOperation for Refund {
    type Request = RefundRequest;
    fn path(&self) -> String {
        "/v1/refunds".into()
    }
    fn request(&self) -> &RefundRequest {
        &self.request
    }
}

/// The processor's codes for an operation the charge does not allow: final
/// answers about the operation, not about our request.
const REFUSAL_CODES: [&str; 5] = [
    CHARGE_NOT_CAPTURABLE_CODE,
    AMOUNT_EXCEEDS_CAPTURABLE_CODE,
    CHARGE_NOT_VOIDABLE_CODE,
    CHARGE_NOT_REFUNDABLE_CODE,
    AMOUNT_EXCEEDS_REFUNDABLE_CODE,
];

#[derive(Debug, Clone)]
pub struct ProcessorClient {
    http: reqwest::Client,
    base_url: String,
    timeout: Duration,
}

impl ProcessorClient {
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(usize::MAX) // below WORKER_CONCURRENCY, bursts reopen connections
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends the operation. A call that certainly did not reach the
    /// processor is retried twice at once with short jittered backoff (same
    /// key); a call that may have reached it is not (a timeout already used
    /// the whole budget, and the next attempt must ask first).
    pub async fn execute<O: SimOperation>(&self, op: &O) -> OutcomeOf<O> {
        let url = format!("{}{}", self.base_url, op.path());
        let key = op.idempotency_key();
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_millis(500))
            .with_max_times(2)
            .with_jitter()
            .build();
        loop {
            let sent = self
                .http
                .post(&url)
                .header(IDEMPOTENCY_HEADER, &key)
                .json(op.request())
                .send()
                .await;
            let outcome = self.read(sent, false).await;
            match (&outcome, pauses.next()) {
                (
                    Outcome::Transient {
                        knowledge: Knowledge::NotProcessed,
                        ..
                    },
                    Some(pause),
                ) => tokio::time::sleep(pause).await,
                _ => return outcome,
            }
        }
    }

    /// Asks what became of the operation's key.
    pub async fn lookup<O: SimOperation>(&self, op: &O) -> OutcomeOf<O> {
        let url = format!("{}{}", self.base_url, op.path());
        let sent = self
            .http
            .get(&url)
            .query(&[(LOOKUP_QUERY_PARAM, op.idempotency_key())])
            .send()
            .await;
        self.read(sent, true).await
    }

    async fn read<A: DeserializeOwned, D: DeserializeOwned>(
        &self,
        sent: reqwest::Result<reqwest::Response>,
        lookup: bool,
    ) -> Outcome<A, D> {
        let response = match sent {
            Ok(response) => response,
            Err(err) => return self.failed(&err),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => return self.failed(&err),
        };
        let unknown = |what: &str| Outcome::transient(what, Knowledge::Unknown);
        if status == StatusCode::CONFLICT || status == StatusCode::BAD_REQUEST {
            if let Ok(refusal) = serde_json::from_slice::<ProcessorErrorBody>(&body) {
                if REFUSAL_CODES.contains(&refusal.error.code.as_str()) {
                    return Outcome::Refused {
                        code: refusal.error.code,
                        message: refusal.error.message,
                    };
                }
            }
        }
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map(Outcome::Approved)
                .unwrap_or_else(|_| unknown("processor sent an unreadable approval")),
            StatusCode::PAYMENT_REQUIRED => serde_json::from_slice(&body)
                .map(Outcome::Declined)
                .unwrap_or_else(|_| unknown("processor sent an unreadable decline")),
            // Only the processor's own "never took this key" proves it: a
            // `404` without that code (a wrong base URL) is a rejection.
            StatusCode::NOT_FOUND
                if lookup
                    && serde_json::from_slice::<ProcessorErrorBody>(&body)
                        .is_ok_and(|e| e.error.code == OPERATION_NOT_FOUND_CODE) =>
            {
                Outcome::NotFound
            }
            s if s.is_success() => unknown(&format!(
                "processor answered {} (not an answer we know)",
                s.as_u16()
            )),
            StatusCode::CONFLICT => unknown("processor is still working on this key (409)"),
            StatusCode::TOO_MANY_REQUESTS => Outcome::transient(
                "processor rate-limited the request (429)",
                Knowledge::NotProcessed,
            ),
            StatusCode::SERVICE_UNAVAILABLE => {
                Outcome::transient("processor answered 503", Knowledge::NotProcessed)
            }
            s if s.is_server_error() => unknown(&format!("processor answered {}", s.as_u16())),
            s => Outcome::Rejected(format!(
                "processor rejected the request ({}{})",
                s.as_u16(),
                s.canonical_reason()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            )),
        }
    }

    /// A call that got no answer. Only a failure to connect proves the
    /// processor never saw it.
    fn failed<A, D>(&self, err: &reqwest::Error) -> Outcome<A, D> {
        if err.is_connect() {
            Outcome::transient("cannot connect to the processor", Knowledge::NotProcessed)
        } else if err.is_timeout() {
            Outcome::transient(
                format!(
                    "timeout: no answer from the processor within {} ms",
                    self.timeout.as_millis()
                ),
                Knowledge::Unknown,
            )
        } else {
            Outcome::transient("connection to the processor failed", Knowledge::Unknown)
        }
    }
}

impl CardProcessor for ProcessorClient {
    async fn charge(&self, charge: &Charge) -> OutcomeOf<Charge> {
        self.execute(charge).await
    }
    async fn find_charge(&self, charge: &Charge) -> OutcomeOf<Charge> {
        self.lookup(charge).await
    }
    async fn capture(&self, capture: &Capture) -> OutcomeOf<Capture> {
        self.execute(capture).await
    }
    async fn find_capture(&self, capture: &Capture) -> OutcomeOf<Capture> {
        self.lookup(capture).await
    }
    async fn void(&self, void: &Void) -> OutcomeOf<Void> {
        self.execute(void).await
    }
    async fn find_void(&self, void: &Void) -> OutcomeOf<Void> {
        self.lookup(void).await
    }
    async fn refund(&self, refund: &Refund) -> OutcomeOf<Refund> {
        self.execute(refund).await
    }
    async fn find_refund(&self, refund: &Refund) -> OutcomeOf<Refund> {
        self.lookup(refund).await
    }
}
