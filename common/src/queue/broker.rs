//! A RabbitMQ connection that comes back after the broker does.
//!
//! lapin does not recover connections by itself, so [`Broker`] keeps one
//! connection plus one publishing channel (in confirm mode) and replaces them
//! when they are found closed. It never retries on its own: a caller decides
//! whether to wait and retry (the worker's consume loop) or to fall back (the
//! API leaves the message in the outbox for the relay).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::Topology;

/// How long to wait for a TCP + AMQP handshake before calling the broker
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error("broker did not confirm the message within {0:?}")]
    Timeout(Duration),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("message could not be routed to a queue")]
    Unroutable,
}

/// The broker could not be reached in time (as opposed to a refused
/// operation), for callers that answer "try again later".
#[derive(Debug, thiserror::Error)]
#[error("the broker did not answer within {0:?}")]
pub struct BrokerTimeout(pub Duration);

#[derive(Clone)]
struct Session {
    connection: Arc<Connection>,
    publisher: Channel,
}

impl Session {
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

/// Shared handle: clone the `Arc` around it freely.
pub struct Broker {
    url: String,
    topology: Topology,
    confirm_timeout: Duration,
    session: RwLock<Option<Session>>,
    reconnect: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &crate::config::redact_url(&self.url))
            .field("prefix", &self.topology.prefix())
            .finish()
    }
}

impl Broker {
    /// A handle that connects on first use. Use [`Broker::connect`] to fail
    /// fast at start-up instead.
    pub fn lazy(url: impl Into<String>, topology: Topology) -> Self {
        Self {
            url: url.into(),
            topology,
            confirm_timeout: Duration::from_secs(5),
            session: RwLock::new(None),
            reconnect: tokio::sync::Mutex::new(()),
        }
    }

    /// Connects and declares the topology now.
    pub async fn connect(url: impl Into<String>, topology: Topology) -> anyhow::Result<Self> {
        let broker = Self::lazy(url, topology);
        broker.session().await?;
        Ok(broker)
    }

    /// A handle on the same broker for another topology (its own
    /// connection, opened on first use): the webhook queues, say, so that
    /// their traffic never waits behind the payments'.
    pub fn sibling(&self, topology: Topology) -> Self {
        Self::lazy(self.url.clone(), topology)
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether the connection is up right now (for `/readyz`). Tries to
    /// reconnect if it is not.
    pub async fn is_ready(&self) -> bool {
        self.session().await.is_ok()
    }

    /// Drops the current connection so the next use reconnects.
    pub fn invalidate(&self) {
        let mut guard = self.session.write().unwrap_or_else(|e| e.into_inner());
        *guard = None;
    }

    fn current(&self) -> Option<Session> {
        let guard = self.session.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().filter(|s| s.is_open()).cloned()
    }

    async fn session(&self) -> anyhow::Result<Session> {
        if let Some(session) = self.current() {
            return Ok(session);
        }
        // One reconnect at a time; the others wait and reuse its result.
        let _guard = self.reconnect.lock().await;
        if let Some(session) = self.current() {
            return Ok(session);
        }
        let session = tokio::time::timeout(CONNECT_TIMEOUT, self.open_session())
            .await
            .map_err(|_| BrokerTimeout(CONNECT_TIMEOUT))??;
        *self.session.write().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
        tracing::info!(prefix = self.topology.prefix(), "connected to the broker");
        Ok(session)
    }

    async fn open_session(&self) -> anyhow::Result<Session> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .context("connecting to the broker")?;
        let publisher = connection
            .create_channel()
            .await
            .context("opening a channel")?;
        self.topology.declare(&publisher).await?;
        // Confirms: a publish counts only once the broker has the message
        // (written to disk for persistent messages on durable queues).
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        Ok(Session {
            connection: Arc::new(connection),
            publisher,
        })
    }

    /// A new channel on the current connection, for a consumer or an
    /// operator command. The caller sets its prefetch.
    pub async fn open_channel(&self) -> anyhow::Result<Channel> {
        let session = self.session().await?;
        match session.connection.create_channel().await {
            Ok(channel) => Ok(channel),
            Err(err) => {
                self.invalidate();
                Err(err).context("opening a channel")
            }
        }
    }

    /// Publishes a persistent message to the exchange and waits for the
    /// broker's confirm. `mandatory` makes an unroutable message an error
    /// instead of a silent drop.
    pub async fn publish(
        &self,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
        expiration: Option<Duration>,
    ) -> Result<(), PublishError> {
        let session = self.session().await.map_err(PublishError::Unavailable)?;
        let mut properties = BasicProperties::default()
            // 2 = persistent: the message survives a broker restart.
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(headers);
        if let Some(expiration) = expiration {
            properties = properties.with_expiration(expiration.as_millis().to_string().into());
        }
        let publish = async {
            let confirm = session
                .publisher
                .basic_publish(
                    self.topology.exchange(),
                    routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties,
                )
                .await
                .map_err(|e| PublishError::Unavailable(e.into()))?;
            match confirm
                .await
                .map_err(|e| PublishError::Unavailable(e.into()))?
            {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_returned)) => Err(PublishError::Unroutable),
                Confirmation::Nack(_) => Err(PublishError::Nacked),
                // Confirm mode is always on for this channel.
                Confirmation::NotRequested => Ok(()),
            }
        };
        let result = match tokio::time::timeout(self.confirm_timeout, publish).await {
            Ok(result) => result,
            Err(_) => Err(PublishError::Timeout(self.confirm_timeout)),
        };
        if matches!(
            result,
            Err(PublishError::Unavailable(_) | PublishError::Timeout(_))
        ) {
            // A silent or broken connection: start afresh next time.
            self.invalidate();
        }
        result
    }

    /// Publishes a job to the main queue as a first attempt: what the API's
    /// fast path and relay, the rescuer and a dead-letter replay all send.
    pub async fn publish_job(&self, job: &super::Job) -> Result<(), PublishError> {
        let headers = super::headers::build(&[(super::headers::ATTEMPT, super::headers::int(0))]);
        self.publish(Topology::PROCESS_KEY, &job.to_bytes(), headers, None)
            .await
    }

    /// Messages ready in each queue of the topology, read with passive
    /// declares (which create nothing). Queues that cannot be read are left
    /// out. For metrics and operators.
    pub async fn queue_depths(&self) -> Vec<(String, u32)> {
        let queues = self.topology.queues();
        let Ok(channel) = self.open_channel().await else {
            return Vec::new();
        };
        let mut depths = Vec::with_capacity(queues.len());
        for queue in queues {
            let declared = channel
                .queue_declare(
                    &queue,
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..lapin::options::QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match declared {
                Ok(declared) => depths.push((queue, declared.message_count())),
                // A failed passive declare closes the channel.
                Err(_) => break,
            }
        }
        let _ = channel.close(200, "done").await;
        depths
    }

    /// Closes the connection cleanly (at shutdown).
    pub async fn close(&self) {
        let session = self
            .session
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(session) = session {
            let _ = session.connection.close(200, "shutting down").await;
        }
    }
}
