//! A worker's webhook sender: its broker handle for the webhook queues and
//! its HTTP client, which reaches public addresses only (unless
//! `WEBHOOK_ALLOW_PRIVATE`), follows no redirect, uses no proxy, is bounded
//! by `WEBHOOK_TIMEOUT_MS` and reads at most [`MAX_ANSWER_BYTES`] of an
//! answer. What a delivery does with it is [`crate::webhooks`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::db::webhooks::DeliveryWork;
use common::domain::EventId;
use common::queue::{Broker, RetryTiers};
use common::secret::SecretsKeys;
use common::webhooks::{self as hooks, AttemptOutcome, DeliveryJob};
use lapin::types::FieldTable;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Bytes of a receiver's answer read (and thrown away) at most.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// The webhook side of a worker: its broker handle and HTTP client.
pub struct Deliverer {
    pub broker: Arc<Broker>,
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
    pub(crate) delays: RetryTiers,
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
    pub(crate) fn hold(&self) -> Duration {
        self.timeout + Duration::from_secs(10)
    }

    pub(crate) async fn publish(
        &self,
        routing_key: &str,
        job: &DeliveryJob,
        delay: Option<Duration>,
    ) {
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
    pub(crate) async fn send(
        &self,
        work: &DeliveryWork,
    ) -> (AttemptOutcome, Option<u16>, Option<String>) {
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
