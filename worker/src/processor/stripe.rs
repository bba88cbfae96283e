//! The Stripe adapter (`PROCESSOR=stripe`): our operations as Stripe's
//! PaymentIntents API, from Stripe's API reference, with the
//! `Stripe-Version` pinned ([`STRIPE_VERSION`]).
//!
//! - A charge is `POST /v1/payment_intents` with `confirm=true` and
//!   `capture_method` `automatic` or `manual` (our `capture`); the card is
//!   a PaymentMethod id (`pm_…`) or, for a `tok_…`, `payment_method_data`
//!   with the card token. A capture is `POST …/:id/capture` with
//!   `amount_to_capture`, a void `POST …/:id/cancel`, a refund
//!   `POST /v1/refunds` with `payment_intent` and `amount`.
//! - Bodies are form-encoded with bracketed keys (`serde_qs`), every `POST`
//!   has an `Idempotency-Key` derived from our payment or operation id, and
//!   every object we create carries `metadata[payment_id]` (refunds also
//!   `metadata[operation_id]`). Captures and cancels create no object.
//! - An unknown outcome is settled by finding what we created: the
//!   PaymentIntent by `metadata[payment_id]` (a list, newest first, back to
//!   the payment's creation), a capture or void by the PaymentIntent's
//!   status, a refund by `metadata[operation_id]` among the PaymentIntent's
//!   refunds. Only "no such object" lets the operation be sent again, and
//!   then with the same key, so Stripe itself would replay a request it did
//!   take (it keeps keys for at least 24 hours).
//!
//! Answers: `402` is a decline (Stripe's `decline_code` kept; keyed on the
//! status and `code`, not `type`, which fakes get wrong); `400`, `401`,
//! `403`, `404` mean our request or credentials are wrong: rejected, so the
//! job is held for an operator, except the few codes that are a final
//! answer about the operation (not capturable, amount too large);
//! `409` and `429` are transient (resent at once, twice at most, after
//! `Retry-After` if it is short, unless `Stripe-Should-Retry: false`, which
//! holds the job); `5xx`, timeouts and cut connections are unknown outcomes.
//! A PaymentIntent that `requires_action` (3-D Secure) is held with that
//! reason: not supported yet, and never called a failure.
//!
//! Nothing here logs: error texts are ours and never quote Stripe's
//! message (which can quote what we sent), the key or the card.

use std::collections::HashMap;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use common::db::lifecycle::Knowledge;
use common::processor::{
    CaptureSucceeded, CardDetails, ChargeApproved, ChargeDeclined, RefundDeclined, RefundStatus,
    RefundSucceeded, VoidSucceeded, AMOUNT_EXCEEDS_CAPTURABLE_CODE, AMOUNT_EXCEEDS_REFUNDABLE_CODE,
    CHARGE_NOT_CAPTURABLE_CODE, CHARGE_NOT_REFUNDABLE_CODE, CHARGE_NOT_VOIDABLE_CODE,
    IDEMPOTENCY_HEADER, REFUND_DECLINED_CODE,
};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Capture, CardProcessor, Charge, Outcome, OutcomeOf, Refund, Void};
use crate::config::SecretKey;

/// `processor_response.processor` of everything this adapter records.
pub const NAME: &str = "stripe";

/// The API version every request pins, so Stripe's answers keep the shape
/// this adapter reads whatever the account's default version.
pub const STRIPE_VERSION: &str = "2024-06-20";

/// Objects a lookup pages through at most before it gives up (and the
/// outcome stays unknown: never a false "not found").
const LOOKUP_PAGES: usize = 50;

/// How much older than our payment a PaymentIntent may look (clocks
/// differ) and still be ours: a newest-first list stops past it.
const CLOCK_SKEW_SECS: i64 = 600;

/// A `Retry-After` longer than this is left to the step's delay tiers.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base_url: String,
    key: SecretKey,
    timeout: Duration,
}

impl StripeClient {
    pub fn new(base_url: &str, key: SecretKey, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST path` with the form `body` and our idempotency key.
    async fn post<T: Serialize>(&self, path: &str, key: &str, body: &T) -> Reply {
        let form = match serde_qs::to_string(body) {
            Ok(form) => form,
            Err(_) => return Reply::Class(Class::Rejected("cannot encode the request".into())),
        };
        let url = format!("{}{path}", self.base_url);
        self.send(|| {
            self.http
                .post(&url)
                .header(IDEMPOTENCY_HEADER, key)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form.clone())
        })
        .await
    }

    /// `GET path_and_query` (already encoded).
    async fn get(&self, path_and_query: &str) -> Reply {
        let url = format!("{}{path_and_query}", self.base_url);
        self.send(|| self.http.get(&url)).await
    }

    /// Sends a request built by `build`; a `409`, a `429` or a failure to
    /// connect is sent again at once (twice at most, same key), after
    /// `Retry-After` when Stripe gives a short one.
    async fn send(&self, build: impl Fn() -> reqwest::RequestBuilder) -> Reply {
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_millis(500))
            .with_max_times(2)
            .with_jitter()
            .build();
        loop {
            let sent = build()
                .bearer_auth(self.key.expose())
                .header("Stripe-Version", STRIPE_VERSION)
                .send()
                .await;
            let (reply, wait) = self.read(sent).await;
            let again = matches!(&reply, Reply::Class(Class::Transient { again: true, .. }));
            match (again, pauses.next()) {
                (true, Some(pause)) => match wait {
                    Some(wait) if wait > MAX_INLINE_WAIT => return reply,
                    wait => tokio::time::sleep(wait.unwrap_or_default().max(pause)).await,
                },
                _ => return reply,
            }
        }
    }

    /// Sorts one answer; with it, the `Retry-After` Stripe asked for.
    async fn read(&self, sent: reqwest::Result<reqwest::Response>) -> (Reply, Option<Duration>) {
        let response = match sent {
            Ok(response) => response,
            Err(err) => return (Reply::Class(self.failed(&err)), None),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => return (Reply::Class(self.failed(&err)), None),
        };
        let wait = retry_after(&headers);
        let should_retry = headers
            .get("Stripe-Should-Retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let error = || {
            serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_default()
        };
        let reply = match status {
            s if s.is_success() => Reply::Ok(body.to_vec()),
            StatusCode::PAYMENT_REQUIRED => Reply::Card(error()),
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => Reply::Invalid {
                status: status.as_u16(),
                error: error(),
            },
            StatusCode::UNAUTHORIZED => Reply::Class(Class::Rejected(
                "Stripe refused our credentials (401): check STRIPE_SECRET_KEY".into(),
            )),
            StatusCode::FORBIDDEN => Reply::Class(Class::Rejected(
                "Stripe refused the request (403): STRIPE_SECRET_KEY lacks a permission".into(),
            )),
            StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS if should_retry == Some(false) => {
                Reply::Class(Class::Rejected(format!(
                    "Stripe answered {} and Stripe-Should-Retry: false",
                    status.as_u16()
                )))
            }
            // The same key in use by a request still running, or a lock
            // timeout: it may be done by the next attempt, which asks first.
            StatusCode::CONFLICT => Reply::Class(Class::Transient {
                reason: "Stripe answered 409 (idempotency key in use or a lock timeout)".into(),
                knowledge: Knowledge::Unknown,
                again: true,
            }),
            StatusCode::TOO_MANY_REQUESTS => Reply::Class(Class::Transient {
                reason: "Stripe rate-limited the request (429)".into(),
                knowledge: Knowledge::NotProcessed,
                again: true,
            }),
            s if s.is_server_error() => Reply::Class(Class::Transient {
                reason: format!("Stripe answered {}", s.as_u16()),
                knowledge: Knowledge::Unknown,
                again: false,
            }),
            s => Reply::Class(Class::Rejected(format!(
                "Stripe rejected the request ({})",
                s.as_u16()
            ))),
        };
        (reply, wait)
    }

    /// A call that got no answer. Only a failure to connect proves Stripe
    /// never saw it.
    fn failed(&self, err: &reqwest::Error) -> Class {
        if err.is_connect() {
            Class::Transient {
                reason: "cannot connect to Stripe".into(),
                knowledge: Knowledge::NotProcessed,
                again: true,
            }
        } else if err.is_timeout() {
            Class::Transient {
                reason: format!(
                    "timeout: no answer from Stripe within {} ms",
                    self.timeout.as_millis()
                ),
                knowledge: Knowledge::Unknown,
                again: false,
            }
        } else {
            Class::Transient {
                reason: "connection to Stripe failed".into(),
                knowledge: Knowledge::Unknown,
                again: false,
            }
        }
    }

    /// Reads a PaymentIntent by id (`404`: rejected, since we only ask
    /// about ids Stripe gave us).
    async fn intent<A, D>(&self, id: &str) -> Result<PaymentIntent, Outcome<A, D>> {
        let path = format!(
            "/v1/payment_intents/{}?expand[]=latest_charge",
            urlencode(id)
        );
        decode(self.get(&path).await, &[])
    }

    /// The card of a declined charge: from the PaymentMethod, when the
    /// token is one (best effort: a decline is recorded without it).
    async fn declined_card(&self, token: &str) -> CardDetails {
        if !token.starts_with("pm_") {
            return empty_card();
        }
        let path = format!("/v1/payment_methods/{}", urlencode(token));
        match decode::<PaymentMethod, (), ()>(self.get(&path).await, &[]) {
            Ok(pm) => card_details(None, pm.card.as_ref()),
            Err(_) => empty_card(),
        }
    }

    async fn decline(&self, charge: &Charge, error: ApiError) -> ChargeDeclined {
        let card = self.declined_card(&charge.request.token).await;
        declined(error, card)
    }
}

/// What one HTTP exchange with Stripe came to.
enum Reply {
    /// `2xx` with its body.
    Ok(Vec<u8>),
    /// `402`.
    Card(ApiError),
    /// `400` or `404`: the caller knows which codes are a final answer
    /// about the operation; every other one is a rejection.
    Invalid {
        status: u16,
        error: ApiError,
    },
    Class(Class),
}

/// An answer that says nothing about the operation itself.
enum Class {
    Rejected(String),
    Transient {
        reason: String,
        knowledge: Knowledge,
        /// Certainly not done, or safe to resend at once with the same key.
        again: bool,
    },
}

impl Class {
    fn outcome<A, D>(self) -> Outcome<A, D> {
        match self {
            Self::Rejected(reason) => Outcome::Rejected(reason),
            Self::Transient {
                reason, knowledge, ..
            } => Outcome::transient(reason, knowledge),
        }
    }
}

/// The `2xx` body as `T`; a `400`/`404` whose `code` is in `refusals`
/// becomes [`Outcome::Refused`] with our code; everything else the outcome
/// it is. A `402` here (not a charge) is a rejection.
fn decode<T: DeserializeOwned, A, D>(
    reply: Reply,
    refusals: &[(&str, &str)],
) -> Result<T, Outcome<A, D>> {
    match reply {
        Reply::Ok(body) => serde_json::from_slice(&body).map_err(|_| {
            Outcome::transient("Stripe sent an answer we cannot read", Knowledge::Unknown)
        }),
        Reply::Card(_) => Err(Outcome::Rejected(
            "Stripe answered 402 to a request that is not a charge".into(),
        )),
        Reply::Invalid { status, error } => Err(invalid(status, error, refusals)),
        Reply::Class(class) => Err(class.outcome()),
    }
}

fn invalid<A, D>(status: u16, error: ApiError, refusals: &[(&str, &str)]) -> Outcome<A, D> {
    let code = error.code.as_deref().unwrap_or("");
    if let Some((_, ours)) = refusals.iter().find(|(theirs, _)| *theirs == code) {
        return Outcome::Refused {
            code: (*ours).to_owned(),
            message: format!("Stripe refused the operation ({code})."),
        };
    }
    Outcome::Rejected(format!(
        "Stripe rejected the request ({status} {}{}{})",
        error.kind.as_deref().unwrap_or("error"),
        error
            .code
            .as_deref()
            .map(|c| format!(", code {c}"))
            .unwrap_or_default(),
        error
            .param
            .as_deref()
            .map(|p| format!(", param {p}"))
            .unwrap_or_default(),
    ))
}

/// Each lookup within one `PROCESSOR_TIMEOUT_MS`, each send (with its
/// quick resends and a decline's card) within two: a settle stays within
/// the three the lease is sized for (`LEASE_SECS`). Past it, the outcome is
/// unknown.
impl CardProcessor for StripeClient {
    async fn charge(&self, charge: &Charge) -> OutcomeOf<Charge> {
        self.bounded(2, self.send_charge(charge)).await
    }
    async fn find_charge(&self, charge: &Charge) -> OutcomeOf<Charge> {
        self.bounded(1, self.lookup_charge(charge)).await
    }
    async fn capture(&self, capture: &Capture) -> OutcomeOf<Capture> {
        self.bounded(2, self.send_capture(capture)).await
    }
    async fn find_capture(&self, capture: &Capture) -> OutcomeOf<Capture> {
        self.bounded(1, self.lookup_capture(capture)).await
    }
    async fn void(&self, void: &Void) -> OutcomeOf<Void> {
        self.bounded(2, self.send_void(void)).await
    }
    async fn find_void(&self, void: &Void) -> OutcomeOf<Void> {
        self.bounded(1, self.lookup_void(void)).await
    }
    async fn refund(&self, refund: &Refund) -> OutcomeOf<Refund> {
        self.bounded(2, self.send_refund(refund)).await
    }
    async fn find_refund(&self, refund: &Refund) -> OutcomeOf<Refund> {
        self.bounded(1, self.lookup_refund(refund)).await
    }
}

impl StripeClient {
    /// `work` within `timeouts` × `PROCESSOR_TIMEOUT_MS`, else unknown.
    async fn bounded<A, D>(
        &self,
        timeouts: u32,
        work: impl std::future::Future<Output = Outcome<A, D>>,
    ) -> Outcome<A, D> {
        let limit = self.timeout * timeouts;
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Outcome::transient(
                format!("no answer from Stripe within {} ms", limit.as_millis()),
                Knowledge::Unknown,
            )
        })
    }

    async fn send_charge(&self, charge: &Charge) -> OutcomeOf<Charge> {
        let request = &charge.request;
        let token = request.token.as_str();
        let (payment_method, payment_method_data) = if token.starts_with("tok_") {
            (
                None,
                Some(PaymentMethodData {
                    kind: "card",
                    card: TokenCard { token },
                }),
            )
        } else {
            (Some(token), None)
        };
        let body = CreateIntent {
            amount: request.amount,
            currency: request.currency.to_lowercase(),
            payment_method,
            payment_method_data,
            payment_method_types: ["card"],
            confirm: true,
            capture_method: if request.capture {
                "automatic"
            } else {
                "manual"
            },
            metadata: Metadata {
                payment_id: &charge.key,
                operation_id: None,
            },
            expand: ["latest_charge", "payment_method"],
        };
        match self.post("/v1/payment_intents", &charge.key, &body).await {
            Reply::Card(error) => Outcome::Declined(self.decline(charge, error).await),
            reply => match decode::<PaymentIntent, _, _>(reply, &[]) {
                Ok(intent) => self.charged(charge, intent).await,
                Err(outcome) => outcome,
            },
        }
    }

    async fn lookup_charge(&self, charge: &Charge) -> OutcomeOf<Charge> {
        let cutoff = charge.created_at.timestamp() - CLOCK_SKEW_SECS;
        let mut after: Option<String> = None;
        for _ in 0..LOOKUP_PAGES {
            let mut path = String::from(
                "/v1/payment_intents?limit=100&expand[]=data.latest_charge&expand[]=data.payment_method",
            );
            if let Some(after) = &after {
                path.push_str(&format!("&starting_after={}", urlencode(after)));
            }
            let page: List<PaymentIntent> = match decode(self.get(&path).await, &[]) {
                Ok(page) => page,
                Err(outcome) => return outcome,
            };
            let older = !page.data.is_empty() && page.data.iter().all(|pi| pi.created < cutoff);
            after = page.data.last().map(|pi| pi.id.clone());
            let mut ours: Vec<PaymentIntent> = page
                .data
                .into_iter()
                .filter(|pi| pi.metadata.get("payment_id") == Some(&charge.key))
                .collect();
            // One per payment; should there be more, the one that took the
            // money is the answer.
            ours.sort_by_key(|pi| !matches!(pi.status.as_str(), "succeeded" | "requires_capture"));
            if let Some(intent) = ours.into_iter().next() {
                return self.charged(charge, intent).await;
            }
            if !page.has_more || older || after.is_none() {
                return Outcome::NotFound;
            }
        }
        Outcome::transient(
            format!("no PaymentIntent for the payment in the latest {LOOKUP_PAGES} pages"),
            Knowledge::Unknown,
        )
    }

    async fn send_capture(&self, capture: &Capture) -> OutcomeOf<Capture> {
        let body = CaptureIntent {
            amount_to_capture: capture.request.amount,
            expand: ["latest_charge"],
        };
        let path = format!(
            "/v1/payment_intents/{}/capture",
            urlencode(&capture.charge_id)
        );
        let refusals = [
            (
                "payment_intent_unexpected_state",
                CHARGE_NOT_CAPTURABLE_CODE,
            ),
            ("amount_too_large", AMOUNT_EXCEEDS_CAPTURABLE_CODE),
        ];
        match decode(self.post(&path, &capture.key, &body).await, &refusals) {
            Ok(intent) => captured(capture, &intent),
            Err(outcome) => outcome,
        }
    }

    async fn lookup_capture(&self, capture: &Capture) -> OutcomeOf<Capture> {
        match self.intent(&capture.charge_id).await {
            Ok(intent) => match intent.status.as_str() {
                "requires_capture" => Outcome::NotFound,
                "succeeded" => captured(capture, &intent),
                _ => not_capturable(&intent),
            },
            Err(outcome) => outcome,
        }
    }

    async fn send_void(&self, void: &Void) -> OutcomeOf<Void> {
        let path = format!("/v1/payment_intents/{}/cancel", urlencode(&void.charge_id));
        let refusals = [("payment_intent_unexpected_state", CHARGE_NOT_VOIDABLE_CODE)];
        match decode(self.post(&path, &void.key, &NoFields {}).await, &refusals) {
            Ok(intent) => voided(&intent),
            Err(outcome) => outcome,
        }
    }

    async fn lookup_void(&self, void: &Void) -> OutcomeOf<Void> {
        match self.intent(&void.charge_id).await {
            Ok(intent) => match intent.status.as_str() {
                "requires_capture" => Outcome::NotFound,
                _ => voided(&intent),
            },
            Err(outcome) => outcome,
        }
    }

    async fn send_refund(&self, refund: &Refund) -> OutcomeOf<Refund> {
        let body = CreateRefund {
            payment_intent: &refund.request.charge,
            amount: refund.request.amount,
            metadata: Metadata {
                payment_id: &refund.payment_id,
                operation_id: Some(&refund.request.reference),
            },
        };
        let refusals = [
            ("charge_already_refunded", CHARGE_NOT_REFUNDABLE_CODE),
            ("amount_too_large", AMOUNT_EXCEEDS_REFUNDABLE_CODE),
        ];
        match decode(
            self.post("/v1/refunds", &refund.key, &body).await,
            &refusals,
        ) {
            Ok(done) => refunded(refund, done),
            Err(outcome) => outcome,
        }
    }

    async fn lookup_refund(&self, refund: &Refund) -> OutcomeOf<Refund> {
        let mut after: Option<String> = None;
        for _ in 0..LOOKUP_PAGES {
            let mut path = format!(
                "/v1/refunds?limit=100&payment_intent={}",
                urlencode(&refund.request.charge)
            );
            if let Some(after) = &after {
                path.push_str(&format!("&starting_after={}", urlencode(after)));
            }
            let page: List<StripeRefund> = match decode(self.get(&path).await, &[]) {
                Ok(page) => page,
                Err(outcome) => return outcome,
            };
            after = page.data.last().map(|r| r.id.clone());
            let ours = page
                .data
                .into_iter()
                .find(|r| r.metadata.get("operation_id") == Some(&refund.request.reference));
            if let Some(done) = ours {
                return refunded(refund, done);
            }
            if !page.has_more || after.is_none() {
                return Outcome::NotFound;
            }
        }
        Outcome::transient(
            format!("no refund for the operation in the latest {LOOKUP_PAGES} pages"),
            Knowledge::Unknown,
        )
    }
}

impl StripeClient {
    /// What a PaymentIntent we created for `charge` says about it.
    async fn charged(&self, charge: &Charge, intent: PaymentIntent) -> OutcomeOf<Charge> {
        match intent.status.as_str() {
            "succeeded" => Outcome::Approved(approved(&intent, true)),
            "requires_capture" => Outcome::Approved(approved(&intent, false)),
            "requires_action" => Outcome::Rejected(format!(
                "Stripe asks for customer action (3-D Secure, status requires_action) on {}; \
                 this integration does not support it yet, nothing was charged",
                intent.id
            )),
            "processing" => Outcome::transient(
                format!("Stripe is still processing {}", intent.id),
                Knowledge::Unknown,
            ),
            "requires_payment_method" => match intent.last_payment_error {
                Some(mut error) => {
                    error.payment_intent_id = Some(intent.id.clone());
                    Outcome::Declined(self.decline(charge, error).await)
                }
                None => Outcome::Rejected(format!(
                    "Stripe left {} without a payment method",
                    intent.id
                )),
            },
            other => Outcome::Rejected(format!(
                "Stripe's PaymentIntent {} is {other}, not an answer to a charge",
                intent.id
            )),
        }
    }
}

fn captured(capture: &Capture, intent: &PaymentIntent) -> OutcomeOf<Capture> {
    if intent.status != "succeeded" {
        return not_capturable(intent);
    }
    let charge = intent.latest_charge.as_ref().and_then(Expandable::object);
    let amount = charge
        .and_then(|c| c.amount_captured)
        .filter(|a| *a > 0)
        .or(capture.request.amount)
        .unwrap_or(intent.amount);
    Outcome::Approved(CaptureSucceeded {
        id: charge.map_or_else(|| intent.id.clone(), |c| c.id.clone()),
        charge: intent.id.clone(),
        amount,
        currency: intent.currency.to_uppercase(),
        captured: true,
        amount_released: (intent.amount - amount).max(0),
    })
}

fn not_capturable<A, D>(intent: &PaymentIntent) -> Outcome<A, D> {
    Outcome::Refused {
        code: CHARGE_NOT_CAPTURABLE_CODE.into(),
        message: format!("Stripe's PaymentIntent is {}.", intent.status),
    }
}

fn voided(intent: &PaymentIntent) -> OutcomeOf<Void> {
    if intent.status != "canceled" {
        return Outcome::Refused {
            code: CHARGE_NOT_VOIDABLE_CODE.into(),
            message: format!("Stripe's PaymentIntent is {}.", intent.status),
        };
    }
    Outcome::Approved(VoidSucceeded {
        id: intent.id.clone(),
        charge: intent.id.clone(),
        voided: true,
        amount: intent.amount,
        currency: intent.currency.to_uppercase(),
    })
}

fn refunded(refund: &Refund, done: StripeRefund) -> OutcomeOf<Refund> {
    match done.status.as_deref() {
        Some("succeeded") => Outcome::Approved(RefundSucceeded {
            id: done.id,
            charge: refund.request.charge.clone(),
            amount: done.amount,
            currency: done.currency.to_uppercase(),
            status: RefundStatus::Succeeded,
            reference: refund.request.reference.clone(),
        }),
        Some("failed") | Some("canceled") => Outcome::Declined(RefundDeclined {
            id: done.id,
            charge: refund.request.charge.clone(),
            amount: done.amount,
            currency: done.currency.to_uppercase(),
            status: RefundStatus::Failed,
            code: REFUND_DECLINED_CODE.into(),
            message: format!(
                "Stripe could not refund ({}).",
                done.failure_reason.as_deref().unwrap_or("no reason given")
            ),
            reference: refund.request.reference.clone(),
        }),
        // `pending`, `requires_action`: Stripe has it; the next attempt
        // finds it by its metadata and reads where it ended.
        status => Outcome::transient(
            format!(
                "Stripe's refund {} is {}",
                done.id,
                status.unwrap_or("without a status")
            ),
            Knowledge::Unknown,
        ),
    }
}

fn approved(intent: &PaymentIntent, captured: bool) -> ChargeApproved {
    let charge = intent.latest_charge.as_ref().and_then(Expandable::object);
    let on_charge = charge
        .and_then(|c| c.payment_method_details.as_ref())
        .and_then(|d| d.card.as_ref());
    let on_method = intent
        .payment_method
        .as_ref()
        .and_then(Expandable::object)
        .and_then(|pm| pm.card.as_ref());
    let checks = on_charge
        .and_then(|c| c.checks.as_ref())
        .or_else(|| on_method.and_then(|c| c.checks.as_ref()));
    let check =
        |f: fn(&Checks) -> &Option<String>| checks.and_then(|c| f(c).clone()).unwrap_or_default();
    let avs = {
        let postal = check(|c| &c.address_postal_code_check);
        if postal.is_empty() {
            check(|c| &c.address_line1_check)
        } else {
            postal
        }
    };
    ChargeApproved {
        id: intent.id.clone(),
        approved: true,
        captured,
        authorization_code: charge
            .and_then(|c| c.authorization_code.clone())
            .unwrap_or_default(),
        avs_result: avs,
        cvv_result: check(|c| &c.cvc_check),
        network_transaction_id: on_charge
            .and_then(|c| c.network_transaction_id.clone())
            .unwrap_or_default(),
        risk_score: charge
            .and_then(|c| c.outcome.as_ref())
            .and_then(|o| o.risk_score)
            .unwrap_or_default(),
        card: card_details(on_charge, on_method),
    }
}

fn declined(error: ApiError, card: CardDetails) -> ChargeDeclined {
    let code = error.code.unwrap_or_else(|| "card_declined".into());
    ChargeDeclined {
        id: error
            .payment_intent_id
            .or(error.payment_intent.map(|pi| pi.id))
            .or(error.charge)
            .unwrap_or_default(),
        approved: false,
        decline_code: error.decline_code.unwrap_or_else(|| code.clone()),
        code,
        // Stripe's decline messages are written for cardholders.
        message: error
            .message
            .unwrap_or_else(|| "Your card was declined.".into()),
        network_transaction_id: String::new(),
        risk_score: 0,
        card,
    }
}

/// Each field from the charge's card when Stripe gives it there, else from
/// the PaymentMethod's.
fn card_details(on_charge: Option<&StripeCard>, on_method: Option<&StripeCard>) -> CardDetails {
    let text = |f: fn(&StripeCard) -> &Option<String>| {
        on_charge
            .and_then(|c| f(c).clone())
            .or_else(|| on_method.and_then(|c| f(c).clone()))
            .unwrap_or_default()
    };
    let number = |f: fn(&StripeCard) -> Option<u32>| {
        on_charge
            .and_then(f)
            .or_else(|| on_method.and_then(f))
            .unwrap_or_default()
    };
    CardDetails {
        last4: text(|c| &c.last4),
        brand: text(|c| &c.brand),
        exp_month: number(|c| c.exp_month),
        exp_year: number(|c| c.exp_year),
        fingerprint: text(|c| &c.fingerprint),
        country: text(|c| &c.country),
        funding: text(|c| &c.funding),
    }
}

fn empty_card() -> CardDetails {
    card_details(None, None)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// Ids go into paths and queries; Stripe's are `[A-Za-z0-9_]`, but a
/// stored id is never trusted to be.
fn urlencode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

// Stripe's wire format: requests.

#[derive(Serialize)]
struct CreateIntent<'a> {
    amount: i64,
    currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_method_data: Option<PaymentMethodData<'a>>,
    payment_method_types: [&'static str; 1],
    confirm: bool,
    capture_method: &'static str,
    metadata: Metadata<'a>,
    expand: [&'static str; 2],
}

#[derive(Serialize)]
struct PaymentMethodData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    card: TokenCard<'a>,
}

#[derive(Serialize)]
struct TokenCard<'a> {
    token: &'a str,
}

#[derive(Serialize)]
struct Metadata<'a> {
    payment_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation_id: Option<&'a str>,
}

#[derive(Serialize)]
struct CaptureIntent {
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_to_capture: Option<i64>,
    expand: [&'static str; 1],
}

#[derive(Serialize)]
struct CreateRefund<'a> {
    payment_intent: &'a str,
    amount: i64,
    metadata: Metadata<'a>,
}

#[derive(Serialize)]
struct NoFields {}

// Stripe's wire format: answers (only what we read; the rest ignored).

#[derive(Deserialize)]
struct ErrorBody {
    error: ApiError,
}

#[derive(Debug, Default, Deserialize)]
struct ApiError {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
    decline_code: Option<String>,
    /// Shown to the client on a decline only; never in a log or a reason.
    message: Option<String>,
    param: Option<String>,
    charge: Option<String>,
    payment_intent: Option<Box<IntentId>>,
    /// Filled by us when the error came from a PaymentIntent.
    #[serde(skip)]
    payment_intent_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IntentId {
    id: String,
}

#[derive(Deserialize)]
struct List<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expandable<T> {
    Object(Box<T>),
    Id(#[allow(dead_code)] String),
}

impl<T> Expandable<T> {
    fn object(&self) -> Option<&T> {
        match self {
            Self::Object(object) => Some(object),
            Self::Id(_) => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    amount: i64,
    currency: String,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    metadata: HashMap<String, String>,
    latest_charge: Option<Expandable<StripeCharge>>,
    payment_method: Option<Expandable<PaymentMethod>>,
    last_payment_error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct StripeCharge {
    id: String,
    amount_captured: Option<i64>,
    authorization_code: Option<String>,
    outcome: Option<ChargeOutcome>,
    payment_method_details: Option<MethodDetails>,
}

#[derive(Debug, Deserialize)]
struct ChargeOutcome {
    risk_score: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct MethodDetails {
    card: Option<StripeCard>,
}

#[derive(Debug, Deserialize)]
struct PaymentMethod {
    card: Option<StripeCard>,
}

#[derive(Debug, Deserialize)]
struct StripeCard {
    brand: Option<String>,
    last4: Option<String>,
    exp_month: Option<u32>,
    exp_year: Option<u32>,
    fingerprint: Option<String>,
    country: Option<String>,
    funding: Option<String>,
    checks: Option<Checks>,
    network_transaction_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Checks {
    cvc_check: Option<String>,
    address_line1_check: Option<String>,
    address_postal_code_check: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StripeRefund {
    id: String,
    amount: i64,
    currency: String,
    status: Option<String>,
    failure_reason: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_is_form_encoded_with_bracketed_keys_and_lower_case_currency() {
        let body = CreateIntent {
            amount: 1000,
            currency: "USD".to_lowercase(),
            payment_method: Some("pm_123"),
            payment_method_data: None,
            payment_method_types: ["card"],
            confirm: true,
            capture_method: "manual",
            metadata: Metadata {
                payment_id: "pay_1",
                operation_id: None,
            },
            expand: ["latest_charge", "payment_method"],
        };
        let form = serde_qs::to_string(&body).expect("encodes");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("amount"), Some("1000"));
        assert_eq!(get("currency"), Some("usd"));
        assert_eq!(get("metadata[payment_id]"), Some("pay_1"));
        assert_eq!(get("capture_method"), Some("manual"));
        assert_eq!(get("confirm"), Some("true"));
        assert_eq!(get("payment_method_types[0]"), Some("card"));
        assert_eq!(get("expand[1]"), Some("payment_method"));
        assert_eq!(get("payment_method_data[card][token]"), None);
    }

    #[test]
    fn a_decline_keeps_stripes_decline_code() {
        let error: ErrorBody = serde_json::from_str(
            r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds.","payment_intent":{"id":"pi_1","status":"requires_payment_method"}}}"#,
        )
        .expect("parses");
        let declined = declined(error.error, empty_card());
        assert_eq!(declined.id, "pi_1");
        assert_eq!(declined.code, "card_declined");
        assert_eq!(declined.decline_code, "insufficient_funds");
    }

    #[test]
    fn an_invalid_request_is_rejected_without_quoting_stripes_message() {
        let error = ApiError {
            kind: Some("invalid_request_error".into()),
            code: Some("resource_missing".into()),
            message: Some("No such PaymentMethod: 'pm_secret'".into()),
            param: Some("payment_method".into()),
            ..ApiError::default()
        };
        match invalid::<(), ()>(400, error, &[]) {
            Outcome::Rejected(reason) => {
                assert!(reason.contains("resource_missing"), "{reason}");
                assert!(!reason.contains("pm_secret"), "{reason}");
            }
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_call_past_its_time_budget_is_an_unknown_outcome() {
        let client = StripeClient::new(
            "http://127.0.0.1:9",
            SecretKey::new("sk_test_x"),
            Duration::from_millis(20),
        )
        .expect("client");
        let outcome: Outcome<(), ()> = client.bounded(2, std::future::pending()).await;
        assert_eq!(outcome.label(), "unknown", "{outcome:?}");
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "2".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&headers), None);
    }
}
