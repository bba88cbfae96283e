//! The card processor, behind one interface ([`CardProcessor`]): charge or
//! authorize, capture, void, refund, and for each the lookup that settles an
//! unknown outcome. Two adapters implement it: [`sim`] (our
//! `processor-sim`) and [`stripe`] (Stripe's API). `PROCESSOR` picks one at
//! start-up ([`Processor::new`]).
//!
//! What is the same for every processor lives here and above: the one way
//! an operation is settled ([`Processor::settle`]: when an earlier call's
//! outcome is unknown, ask first, and only "never happened" lets the
//! operation be sent again, with the same idempotency key), and the outcome
//! classes every answer is sorted into ([`Outcome`]). Retries, delay tiers,
//! holds, dead letters, reconciliation and fencing are the step's
//! (`step`, `operations`), never an adapter's.
//!
//! Answers are sorted by what they tell us about money:
//! - approved and declined are final;
//! - `NotFound` (a lookup only) proves the processor never did it;
//! - `Rejected`: the processor refused the request itself (a 4xx that no
//!   retry can fix: a wrong URL, bad credentials, a request it does not
//!   take); the job is held for an operator;
//! - `Refused`: the operation is not allowed for what the charge is (final);
//! - `Transient`: not now. Its [`Knowledge`] says whether the call may have
//!   reached the processor (a timeout, a cut connection, most 5xx, an answer
//!   we cannot read) or certainly did not (cannot connect, 503, 429). Only
//!   the latter can ever let a payment be called "not processed".

use std::future::Future;

use chrono::{DateTime, Utc};
use common::db::lifecycle::Knowledge;
use common::db::payments::PaymentRow;
use common::domain::PaymentId;
use common::processor::{
    CaptureRequest, CaptureSucceeded, ChargeApproved, ChargeDeclined, ChargeRequest,
    ProcessorErrorBody, RefundDeclined, RefundRequest, RefundSucceeded, VoidRequest, VoidSucceeded,
};

use crate::config::{ProcessorKind, Settings};

pub mod sim;
pub mod stripe;

pub use sim::ProcessorClient;

/// What the processor told us.
#[derive(Debug)]
pub enum Outcome<A, D> {
    Approved(A),
    Declined(D),
    /// A lookup found no trace of the operation: it never happened.
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
    pub(crate) fn transient(reason: impl Into<String>, knowledge: Knowledge) -> Self {
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

pub type OutcomeOf<O> = Outcome<<O as Operation>::Approved, <O as Operation>::Declined>;

/// An operation a processor performs at most once, and can be asked about.
/// Each kind names the [`CardProcessor`] methods that send it and look it up.
pub trait Operation: Sync {
    /// What the processor answers when it did the operation.
    type Approved: Send;
    /// What it answers when it refused for a business reason: final.
    type Declined: Send;

    /// Stable across every call and every worker for this operation.
    fn idempotency_key(&self) -> String;
    /// What the operation is called in messages (`charge`, `refund`, …).
    fn name(&self) -> &'static str;
    /// Sends the operation to `processor`.
    fn send<P: CardProcessor>(&self, processor: &P)
        -> impl Future<Output = OutcomeOf<Self>> + Send;
    /// Asks `processor` what became of the operation: [`Outcome::NotFound`]
    /// only when it certainly never happened.
    fn find<P: CardProcessor>(&self, processor: &P)
        -> impl Future<Output = OutcomeOf<Self>> + Send;
}

/// One card processor: what every adapter implements. Each call is one
/// attempt as far as the step is concerned (an adapter may resend at once a
/// call that certainly did not arrive); its answer is sorted into an
/// [`Outcome`].
pub trait CardProcessor: Sync {
    fn charge(&self, charge: &Charge) -> impl Future<Output = OutcomeOf<Charge>> + Send;
    fn find_charge(&self, charge: &Charge) -> impl Future<Output = OutcomeOf<Charge>> + Send;
    fn capture(&self, capture: &Capture) -> impl Future<Output = OutcomeOf<Capture>> + Send;
    fn find_capture(&self, capture: &Capture) -> impl Future<Output = OutcomeOf<Capture>> + Send;
    fn void(&self, void: &Void) -> impl Future<Output = OutcomeOf<Void>> + Send;
    fn find_void(&self, void: &Void) -> impl Future<Output = OutcomeOf<Void>> + Send;
    fn refund(&self, refund: &Refund) -> impl Future<Output = OutcomeOf<Refund>> + Send;
    fn find_refund(&self, refund: &Refund) -> impl Future<Output = OutcomeOf<Refund>> + Send;
}

/// Settles `op` as far as the processor lets us now. If an earlier call's
/// outcome is unknown, asks first: what the processor did is the answer,
/// and only "never happened" lets the operation be sent (again, with the
/// same key).
async fn settle<P: CardProcessor, O: Operation>(
    processor: &P,
    op: &O,
    outcome_unknown: bool,
) -> OutcomeOf<O> {
    if outcome_unknown {
        match op.find(processor).await {
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
    op.send(processor).await
}

/// The processor this worker talks to, chosen by `PROCESSOR`.
#[derive(Debug, Clone)]
pub enum Processor {
    Sim {
        client: ProcessorClient,
        /// `PROCESSOR_NAME`, recorded as `processor_response.processor`.
        name: String,
    },
    Stripe(stripe::StripeClient),
}

impl Processor {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(match settings.processor {
            ProcessorKind::Sim => Self::Sim {
                client: ProcessorClient::new(&settings.processor_url, settings.processor_timeout)?,
                name: settings.processor_name.clone(),
            },
            ProcessorKind::Stripe => {
                let key = settings.stripe.secret_key()?;
                Self::Stripe(stripe::StripeClient::new(
                    &settings.stripe.stripe_api_base,
                    key,
                    settings.processor_timeout,
                )?)
            }
        })
    }

    /// Recorded as `processor_response.processor`.
    pub fn name(&self) -> &str {
        match self {
            Self::Sim { name, .. } => name,
            Self::Stripe(_) => stripe::NAME,
        }
    }

    /// Where the processor is, for an operator's log line (never a secret).
    pub fn location(&self) -> String {
        match self {
            Self::Sim { client, .. } => format!("PROCESSOR_URL={}", client.base_url()),
            Self::Stripe(client) => format!("STRIPE_API_BASE={}", client.base_url()),
        }
    }

    /// See [`settle`].
    pub async fn settle<O: Operation>(&self, op: &O, outcome_unknown: bool) -> OutcomeOf<O> {
        match self {
            Self::Sim { client, .. } => settle(client, op, outcome_unknown).await,
            Self::Stripe(client) => settle(client, op, outcome_unknown).await,
        }
    }
}

/// A charge of a payment; its idempotency key is the payment id.
pub struct Charge {
    pub key: String,
    pub request: ChargeRequest,
    /// When the payment was created: nothing the processor made for it is
    /// older, which bounds a lookup.
    pub created_at: DateTime<Utc>,
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
            created_at: payment.created_at,
        }
    }
}

impl Operation for Charge {
    type Approved = ChargeApproved;
    type Declined = ChargeDeclined;

    fn idempotency_key(&self) -> String {
        self.key.clone()
    }
    fn name(&self) -> &'static str {
        "charge"
    }
    fn send<P: CardProcessor>(&self, p: &P) -> impl Future<Output = OutcomeOf<Self>> + Send {
        p.charge(self)
    }
    fn find<P: CardProcessor>(&self, p: &P) -> impl Future<Output = OutcomeOf<Self>> + Send {
        p.find_charge(self)
    }
}

/// A capture of an authorized charge; its key is the operation's id.
pub struct Capture {
    pub key: String,
    /// The processor's id of the charge (`processor_response.charge_id`).
    pub charge_id: String,
    pub request: CaptureRequest,
}

impl Operation for Capture {
    type Approved = CaptureSucceeded;
    /// Never sent (a capture is refused with a code, not declined).
    type Declined = ProcessorErrorBody;

    fn idempotency_key(&self) -> String {
        self.key.clone()
    }
    fn name(&self) -> &'static str {
        "capture"
    }
    fn send<P: CardProcessor>(&self, p: &P) -> impl Future<Output = OutcomeOf<Self>> + Send {
        p.capture(self)
    }
    fn find<P: CardProcessor>(&self, p: &P) -> impl Future<Output = OutcomeOf<Self>> + Send {
        p.find_capture(self)
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

    fn idempotency_key(&self) -> String {
        self.key.clone()
    }
    fn name(&self) -> &'static str {
        "void"
    }
    fn send<P: CardProcessor>(&self, p: &P) -> impl Future<Output = OutcomeOf<Self>> + Send {
        p.void(self)
    }
    fn find<P: CardProcessor>(&self, p: &P) -> impl Future<Output = OutcomeOf<Self>> + Send {
        p.find_void(self)
    }
}

/// A refund of (part of) a captured charge.
pub struct Refund {
    pub key: String,
    /// Our payment's public id (`pay_…`), for the processor's records.
    pub payment_id: String,
    pub request: RefundRequest,
}

impl Operation for Refund {
    type Approved = RefundSucceeded;
    type Declined = RefundDeclined;

    fn idempotency_key(&self) -> String {
        self.key.clone()
    }
    fn name(&self) -> &'static str {
        "refund"
    }
    fn send<P: CardProcessor>(&self, p: &P) -> impl Future<Output = OutcomeOf<Self>> + Send {
        p.refund(self)
    }
    fn find<P: CardProcessor>(&self, p: &P) -> impl Future<Output = OutcomeOf<Self>> + Send {
        p.find_refund(self)
    }
}
