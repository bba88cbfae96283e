//! The card processor client, and the one mechanism every processor
//! operation goes through: send with an idempotency key, and when an earlier
//! call's outcome is unknown, look the operation up by that key before doing
//! anything else.
//!
//! Answers are sorted by what they tell us about money:
//! - approved and declined are final;
//! - `NotFound` (a lookup only) proves the processor never took the key;
//! - `Rejected`: the processor refused the request itself (a 4xx that no
//!   retry can fix: wrong `PROCESSOR_URL`, bad credentials); the job is
//!   held for an operator;
//! - `Transient`: not now. Its [`Knowledge`] says whether the call may have
//!   reached the processor (a timeout, a connection cut after sending, a 5xx
//!   other than 503, a 409 "same key in progress", an answer we cannot
//!   read) or certainly did not (cannot connect, 503, 429). Only the latter
//!   is retried in-process at once, and only the latter can ever let a
//!   payment be called "not processed".

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use common::db::payments::{Knowledge, PaymentRow};
use common::domain::PaymentId;
use common::processor::{
    CaptureRequest, CaptureSucceeded, ChargeApproved, ChargeDeclined, ChargeRequest,
    ProcessorErrorBody, RefundDeclined, RefundRequest, RefundSucceeded, VoidRequest, VoidSucceeded,
    AMOUNT_EXCEEDS_CAPTURABLE_CODE, AMOUNT_EXCEEDS_REFUNDABLE_CODE, CHARGE_NOT_CAPTURABLE_CODE,
    CHARGE_NOT_REFUNDABLE_CODE, CHARGE_NOT_VOIDABLE_CODE, IDEMPOTENCY_HEADER, LOOKUP_QUERY_PARAM,
    OPERATION_NOT_FOUND_CODE,
};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An operation the processor performs at most once per idempotency key,
/// and can be asked about by that key.
pub trait Operation {
    /// The processor's answer when it did the operation (`200`).
    type Approved: DeserializeOwned;
    /// The processor's answer when it refused for a business reason
    /// (`402`): final, never retried.
    type Declined: DeserializeOwned;
    type Request: Serialize;

    /// Path of the operation (`POST`) and of its lookup (`GET` with
    /// `?idempotency_key=`), e.g. `/v1/charges`.
    fn path(&self) -> String;
    /// Stable across every call and every worker for this operation.
    fn idempotency_key(&self) -> String;
    fn request(&self) -> &Self::Request;
    /// What the operation is called in messages (`charge`, `refund`, …).
    fn name(&self) -> &'static str;
}

/// What the processor told us.
#[derive(Debug)]
pub enum Outcome<A, D> {
    Approved(A),
    Declined(D),
    /// A lookup found no trace of the key: the operation never happened.
    NotFound,
    /// The processor refused the request itself; retrying cannot help.
    Rejected(String),
    /// The processor refused the operation for what the charge is (already
    /// captured, not capturable, nothing left to refund…): final, like a
    /// decline, and nothing happened.
    Refused {
        code: String,
        message: String,
    },
    /// Not now. The text is ours, safe to show a client.
    Transient {
        reason: String,
        knowledge: Knowledge,
    },
}

impl<A, D> Outcome<A, D> {
    fn transient(reason: impl Into<String>, knowledge: Knowledge) -> Self {
        Self::Transient {
            reason: reason.into(),
            knowledge,
        }
    }

    /// For metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Approved(_) => "approved",
            Self::Declined(_) => "declined",
            Self::NotFound => "not_found",
            Self::Rejected(_) => "rejected",
            Self::Refused { .. } => "refused",
            Self::Transient {
                knowledge: Knowledge::Unknown,
                ..
            } => "unknown",
            Self::Transient { .. } => "transient",
        }
    }
}

/// A charge of a payment; its idempotency key is the payment id.
pub struct Charge {
    key: String,
    request: ChargeRequest,
}

impl Charge {
    pub fn of(payment: &PaymentRow) -> Self {
        let id = PaymentId(payment.id);
        Self {
            key: id.to_string(),
            request: ChargeRequest {
                amount: payment.amount,
                currency: payment.currency.to_string(),
                token: payment.card_token.expose().to_owned(),
                capture: payment.capture,
                description: payment.description.clone(),
                statement_descriptor: payment.statement_descriptor.clone(),
                reference: id.to_string(),
            },
        }
    }
}

impl Operation for Charge {
    type Approved = ChargeApproved;
    type Declined = ChargeDeclined;
    type Request = ChargeRequest;

    fn path(&self) -> String {
        "/v1/charges".into()
    }
    fn idempotency_key(&self) -> String {
        self.key.clone()
    }
    fn request(&self) -> &ChargeRequest {
        &self.request
    }
    fn name(&self) -> &'static str {
        "charge"
    }
}

/// A capture of an authorized charge; its key is the operation's id.
pub struct Capture {
    pub key: String,
    pub charge_id: String,
    pub request: CaptureRequest,
}

impl Operation for Capture {
    type Approved = CaptureSucceeded;
    /// Never sent (a capture is refused with a code, not declined).
    type Declined = ProcessorErrorBody;
    type Request = CaptureRequest;

    fn path(&self) -> String {
        format!("/v1/charges/{}/capture", self.charge_id)
    }
    fn idempotency_key(&self) -> String {
        self.key.clone()
    }
    fn request(&self) -> &CaptureRequest {
        &self.request
    }
    fn name(&self) -> &'static str {
        "capture"
    }
}

/// A void of an uncaptured authorization.
pub struct Void {
    pub key: String,
    pub charge_id: String,
    pub request: VoidRequest,
}

impl Operation for Void {
    type Approved = VoidSucceeded;
    type Declined = ProcessorErrorBody;
    type Request = VoidRequest;

    fn path(&self) -> String {
        format!("/v1/charges/{}/void", self.charge_id)
    }
    fn idempotency_key(&self) -> String {
        self.key.clone()
    }
    fn request(&self) -> &VoidRequest {
        &self.request
    }
    fn name(&self) -> &'static str {
        "void"
    }
}

/// A refund of (part of) a captured charge.
pub struct Refund {
    pub key: String,
    pub request: RefundRequest,
}

impl Operation for Refund {
    type Approved = RefundSucceeded;
    type Declined = RefundDeclined;
    type Request = RefundRequest;

    fn path(&self) -> String {
        "/v1/refunds".into()
    }
    fn idempotency_key(&self) -> String {
        self.key.clone()
    }
    fn request(&self) -> &RefundRequest {
        &self.request
    }
    fn name(&self) -> &'static str {
        "refund"
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

pub type OutcomeOf<O> = Outcome<<O as Operation>::Approved, <O as Operation>::Declined>;

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

    /// Settles `op` as far as the processor lets us now. If an earlier call's
    /// outcome is unknown, asks first: what the processor stored is the
    /// answer, and only "never took that key" lets the operation be sent
    /// (again, with the same key).
    pub async fn settle<O: Operation>(&self, op: &O, outcome_unknown: bool) -> OutcomeOf<O> {
        if outcome_unknown {
            match self.lookup(op).await {
                Outcome::NotFound => {}
                Outcome::Transient { reason, .. } => {
                    // Still unknown, whatever this lookup's own fate.
                    return Outcome::transient(
                        format!("asking the processor about the {}: {reason}", op.name()),
                        Knowledge::Unknown,
                    );
                }
                known => return known,
            }
        }
        self.execute(op).await
    }

    /// Sends the operation. A call that certainly did not reach the
    /// processor is retried twice at once with short jittered backoff (same
    /// key); a call that may have reached it is not (a timeout already used
    /// the whole budget, and the next attempt must ask first).
    pub async fn execute<O: Operation>(&self, op: &O) -> OutcomeOf<O> {
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
    pub async fn lookup<O: Operation>(&self, op: &O) -> OutcomeOf<O> {
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
