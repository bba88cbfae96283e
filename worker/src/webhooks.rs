//! Delivering webhook events (DESIGN.md §10): one attempt per message from
//! the webhook queue, signed with the Standard Webhooks scheme.
//!
//! Deliveries have their own queue, delay tiers and dead letters
//! (`Topology::webhooks`), their own connection to the broker and their own
//! concurrency (`WEBHOOK_CONCURRENCY`), so a slow or hanging receiver never
//! holds a payment slot. The delivery row is the truth: a claim with a
//! deadline makes one worker send at a time, every attempt is recorded with
//! its consequence in one statement, and the rescuer publishes a delivery
//! whose message was lost. Delivery is at least once: a worker killed after
//! the receiver answered but before the record sends the event again, with
//! the same `webhook-id`, which receivers use to drop repeats.
//!
//! Safety: the receiver's URL came from a client. Unless
//! `WEBHOOK_ALLOW_PRIVATE`, the client refuses to connect to any address that
//! is not public, checked by its own resolver on the addresses it then
//! connects to (so DNS rebinding cannot slip through), and a literal address
//! is checked before sending; redirects are not followed, no proxy is used,
//! the attempt is bounded by `WEBHOOK_TIMEOUT_MS`, and at most
//! [`MAX_ANSWER_BYTES`] of the answer are read and none of it kept or
//! logged: only its status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::db::webhooks::{self as db, Attempt, Claim, DeliveryWork, Next};
use common::domain::EventId;
use common::queue::{Broker, RetryTiers, Topology};
use common::secret::SecretsKeys;
use common::webhooks::{self as hooks, AttemptOutcome, DeliveryJob};
use lapin::types::FieldTable;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::engine::StepError;
use crate::Context;

/// Bytes of a receiver's answer read (and thrown away) at most.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// Deliveries the rescuer publishes again per pass.
const RESCUE_BATCH: i64 = 500;

/// The webhook side of a worker: its broker handle and HTTP client.
pub struct Deliverer {
    pub broker: Arc<Broker>,
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
    delays: RetryTiers,
    /// Opens the stored signing secrets.
    secrets: SecretsKeys,
}

impl Deliverer {
    pub fn new(
        broker: Arc<Broker>,
        timeout: Duration,
        delays: RetryTiers,
        allow_private: bool,
        secrets: SecretsKeys,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly { allow_private }))
            .user_agent(concat!("payments-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            broker,
            client,
            allow_private,
            timeout,
            delays,
            secrets,
        })
    }

    /// How long a claimed delivery is ours: the attempt's bound and room
    /// to record it.
    fn hold(&self) -> Duration {
        self.timeout + Duration::from_secs(10)
    }

    async fn publish(&self, routing_key: &str, job: &DeliveryJob, delay: Option<Duration>) {
        let published = self
            .broker
            .publish(routing_key, &job.to_bytes(), FieldTable::default(), delay)
            .await;
        if let Err(err) = published {
            // The row says when it is due; the rescuer publishes it then.
            tracing::warn!(delivery_id = %job.delivery_id(), error = %err,
                "could not publish a webhook delivery; the rescuer will");
        }
    }

    /// One attempt: what happened, never the answer's body.
    async fn send(&self, work: &DeliveryWork) -> (AttemptOutcome, Option<u16>, Option<String>) {
        let url = match hooks::parse_url(&work.url) {
            Ok(url) => url,
            Err(err) => return (AttemptOutcome::Blocked, None, Some(err.0)),
        };
        if let Some(ip) = hooks::literal_address(&url) {
            if !self.allow_private && !hooks::is_public(ip) {
                return (
                    AttemptOutcome::Blocked,
                    None,
                    Some("the address is not public".into()),
                );
            }
        }
        let event_id = EventId(work.event_id).to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let aad = work.endpoint_id.as_bytes();
        let opened: Result<Vec<String>, _> = std::iter::once(&work.secret)
            .chain(work.previous_secret.as_ref())
            .map(|stored| self.secrets.open(stored, aad))
            .collect();
        let opened = match opened {
            Ok(opened) => opened,
            Err(err) => {
                return (
                    AttemptOutcome::Failed,
                    None,
                    Some(format!("cannot open the signing secret: {err}")),
                )
            }
        };
        let secrets: Vec<&str> = opened.iter().map(String::as_str).collect();
        let signature =
            match hooks::signature_header(&secrets, &event_id, timestamp, work.body.as_bytes()) {
                Ok(signature) => signature,
                Err(err) => {
                    return (
                        AttemptOutcome::Failed,
                        None,
                        Some(format!("cannot sign: {err}")),
                    )
                }
            };
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &event_id)
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(work.body.clone());
        match request.send().await {
            Ok(mut response) => {
                let status = response.status();
                // Read a little (it lets the connection be reused), keep none.
                let mut read = 0;
                while read < MAX_ANSWER_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                let outcome = if status.is_success() {
                    AttemptOutcome::Delivered
                } else if status == reqwest::StatusCode::GONE {
                    AttemptOutcome::Gone
                } else {
                    AttemptOutcome::Failed
                };
                let error = (!status.is_success()).then(|| format!("answered {status}"));
                (outcome, Some(status.as_u16()), error)
            }
            Err(err) if is_blocked(&err) => (
                AttemptOutcome::Blocked,
                None,
                Some("the host resolves to no public address".into()),
            ),
            Err(err) if err.is_timeout() => (
                AttemptOutcome::Timeout,
                None,
                Some(format!("no answer within {} ms", self.timeout.as_millis())),
            ),
            Err(_) => (
                AttemptOutcome::ConnectionError,
                None,
                Some("could not connect or the connection broke".into()),
            ),
        }
    }
}

/// Handles one message of the webhook queue. `Ok` acks it: done, retried
/// through a delay tier, dead-lettered, or nothing to do.
pub async fn handle(ctx: &Context, data: &[u8]) -> Result<(), StepError> {
    let job = match DeliveryJob::from_bytes(data) {
        Ok(job) => job,
        Err(err) => {
            tracing::error!(error = %err, "undecodable webhook message; dropping it");
            return Ok(());
        }
    };
    let hooks = &ctx.webhooks;
    let id = job.delivery_id();
    let grace = ctx.settings.rescue_after;
    let work = match ctx
        .db(|| db::claim_delivery(&ctx.pool, id, hooks.hold(), grace))
        .await?
    {
        Claim::Taken(work) => work,
        Claim::Nothing => return Ok(()),
        Claim::Busy => {
            // Another worker is on it, or died on it (a redelivered
            // message): look again after the first tier, until its claim
            // runs out.
            let tier = hooks.delays.tier(1);
            hooks
                .publish(&RetryTiers::routing_key(tier), &job, Some(tier))
                .await;
            return Ok(());
        }
    };
    if !work.endpoint_enabled {
        let attempt = Attempt {
            outcome: AttemptOutcome::EndpointDisabled,
            status_code: None,
            error: Some("the endpoint is disabled; nothing was sent"),
            duration: Duration::ZERO,
        };
        ctx.db(|| db::record_attempt(&ctx.pool, &work, &attempt, Next::Drop, grace))
            .await?;
        return Ok(());
    }
    let started = Instant::now();
    let (outcome, status_code, error) = hooks.send(&work).await;
    let took = started.elapsed();
    let attempts = usize::try_from(work.attempt).unwrap_or(usize::MAX);
    let next = match outcome {
        AttemptOutcome::Delivered => Next::Delivered,
        AttemptOutcome::Gone => Next::Disable,
        _ if attempts <= hooks.delays.len() => Next::Retry(hooks.delays.jittered(work.attempt).1),
        _ => Next::Dead,
    };
    let attempt = Attempt {
        outcome,
        status_code,
        error: error.as_deref(),
        duration: took,
    };
    let recorded = ctx
        .db(|| db::record_attempt(&ctx.pool, &work, &attempt, next, grace))
        .await?;
    ctx.metrics.webhook_attempt(outcome.as_str(), took);
    let event_id = EventId(work.event_id);
    tracing::info!(%event_id, delivery_id = %work.id, attempt = work.attempt,
        outcome = outcome.as_str(), status = status_code, "webhook attempt");
    if !recorded {
        // A newer attempt was recorded meanwhile (our claim ran out).
        return Ok(());
    }
    match next {
        Next::Retry(delay) => {
            let tier = hooks.delays.tier(work.attempt);
            hooks
                .publish(&RetryTiers::routing_key(tier), &job, Some(delay))
                .await;
        }
        Next::Dead => {
            tracing::warn!(%event_id, delivery_id = %work.id,
                "webhook delivery out of retries; dead-lettered (POST /v1/events/:id/redeliver sends it again)");
            hooks.publish(Topology::DEAD_KEY, &job, None).await;
        }
        Next::Disable => {
            ctx.metrics.webhook_endpoint_disabled();
            tracing::warn!(endpoint_id = %work.endpoint_id, "endpoint answered 410 Gone; disabled");
        }
        Next::Delivered | Next::Drop => {}
    }
    Ok(())
}

/// Publishes deliveries whose message is late; how many.
pub async fn rescue_once(ctx: &Context) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let overdue = db::take_overdue(&ctx.pool, ctx.settings.rescue_after, RESCUE_BATCH).await?;
        for id in &overdue {
            let job = DeliveryJob::DeliveryV1 { delivery_id: *id };
            ctx.webhooks
                .broker
                .publish(
                    Topology::PROCESS_KEY,
                    &job.to_bytes(),
                    FieldTable::default(),
                    None,
                )
                .await?;
        }
        total += overdue.len();
        if overdue.len() < usize::try_from(RESCUE_BATCH).unwrap_or(0) {
            return Ok(total);
        }
    }
}

/// The client's resolver: only public addresses, unless allowed.
struct PublicOnly {
    allow_private: bool,
}

/// The error a refused name resolves to, found again in reqwest's chain.
#[derive(Debug, thiserror::Error)]
#[error("the host resolves to no public address")]
struct Blocked;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found
                .filter(|addr| allow_private || hooks::is_public(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(Blocked) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

fn is_blocked(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<Blocked>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}
