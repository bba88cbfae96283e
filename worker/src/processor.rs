//! The card processor client.
//!
//! Every call for a payment sends the same `Idempotency-Key` (the payment
//! id), so a retry after a timeout returns the original result instead of a
//! second charge. Answers are sorted into three classes: approved and
//! declined are final; everything else is transient and retried, first a
//! couple of times in-process (a blip), then through the delay queues.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use common::db::payments::PaymentRow;
use common::domain::PaymentId;
use common::processor::{ChargeApproved, ChargeDeclined, ChargeRequest, IDEMPOTENCY_HEADER};
use reqwest::StatusCode;

/// What the processor said, in the terms the worker acts on.
#[derive(Debug)]
pub enum Outcome {
    Approved(ChargeApproved),
    Declined(ChargeDeclined),
    /// The processor refused the request itself (a 4xx other than 402/429):
    /// retrying the same request cannot help.
    Rejected(String),
    /// Unknown or not-yet outcome (timeout, connection error, 5xx, 429): retry
    /// with the same key. The text is ours, safe to show a client.
    Transient(String),
}

#[derive(Debug, Clone)]
pub struct ProcessorClient {
    http: reqwest::Client,
    charges_url: String,
    timeout: Duration,
}

impl ProcessorClient {
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            http,
            charges_url: format!("{}/v1/charges", base_url.trim_end_matches('/')),
            timeout,
        })
    }

    /// Charges the payment. Connection errors, 5xx and 429 are retried twice
    /// in-process with short jittered backoff (same key); a timeout is not,
    /// because it already used the whole time budget.
    pub async fn charge(&self, payment: &PaymentRow) -> Outcome {
        let id = PaymentId(payment.id);
        let request = ChargeRequest {
            amount: payment.amount,
            currency: payment.currency.clone(),
            token: payment.card_token.clone(),
            capture: payment.capture,
            description: payment.description.clone(),
            statement_descriptor: payment.statement_descriptor.clone(),
            reference: id.to_string(),
        };
        let key = id.to_string();
        let attempt = || self.call_once(&request, &key);
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_millis(500))
                    .with_max_times(2)
                    .with_jitter(),
            )
            .when(|outcome: &Outcome| matches!(outcome, Outcome::Transient(reason) if !reason.starts_with("timeout")))
            .await
            .unwrap_or_else(|outcome| outcome)
    }

    /// One HTTP call. `Err` carries a transient outcome so backon retries it.
    async fn call_once(&self, request: &ChargeRequest, key: &str) -> Result<Outcome, Outcome> {
        let response = self
            .http
            .post(&self.charges_url)
            .header(IDEMPOTENCY_HEADER, key)
            .json(request)
            .send()
            .await
            .map_err(|err| Outcome::Transient(self.describe(&err)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| Outcome::Transient(self.describe(&err)))?;
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map(Outcome::Approved)
                .map_err(|_| Outcome::Transient("processor sent an unreadable approval".into())),
            StatusCode::PAYMENT_REQUIRED => serde_json::from_slice(&body)
                .map(Outcome::Declined)
                .map_err(|_| Outcome::Transient("processor sent an unreadable decline".into())),
            StatusCode::TOO_MANY_REQUESTS => Err(Outcome::Transient(
                "processor rate-limited the request (429)".into(),
            )),
            s if s.is_server_error() => Err(Outcome::Transient(format!(
                "processor answered {}",
                s.as_u16()
            ))),
            s => Ok(Outcome::Rejected(format!(
                "processor rejected the request ({})",
                s.as_u16()
            ))),
        }
    }

    fn describe(&self, err: &reqwest::Error) -> String {
        if err.is_timeout() {
            format!(
                "timeout: no answer from the processor within {} ms",
                self.timeout.as_millis()
            )
        } else if err.is_connect() {
            "cannot connect to the processor".into()
        } else {
            "connection to the processor failed".into()
        }
    }
}
