//! A RabbitMQ connection that comes back after the broker does, on another
//! node of a cluster if need be (DESIGN.md §15).
//!
//! lapin does not recover connections by itself, and would only ever retry
//! its one address, so [`Broker`] keeps one connection plus one publishing
//! channel (in confirm mode) and replaces them when they are found closed.
//! `AMQP_URL` may list several nodes, comma-separated: the first connection
//! goes to the first that answers; after a connection is lost the next one
//! starts with the node after the lost one, wrapping around, and declares
//! the topology again. One connect tries each node once; it never sleeps:
//! a caller decides whether to wait (with `backon`'s delays,
//! [`crate::retry::reconnect_delays`]) and retry (the worker's consume
//! loop) or to fall back (the API leaves the message in the outbox for the
//! relay). A publish is done only once the broker confirms it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::Topology;

/// How long to wait for one node's TCP + AMQP handshake before calling it
/// unreachable and trying the next.
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
    /// Index in `Broker::nodes` of the node this session is connected to.
    node: usize,
}

impl Session {
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

/// Shared handle: clone the `Arc` around it freely.
pub struct Broker {
    /// The nodes' URLs, in the order given (never empty).
    nodes: Vec<String>,
    topology: Topology,
    confirm_timeout: Duration,
    session: RwLock<Option<Session>>,
    reconnect: tokio::sync::Mutex<()>,
    /// The node the last session was on, plus one (0: never connected), so
    /// that a reconnect starts with the node after it.
    last_node: AtomicUsize,
    /// Connections opened after the first one.
    reconnections: AtomicU64,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| crate::config::redact_url(n))
            .collect();
        f.debug_struct("Broker")
            .field("nodes", &nodes)
            .field("prefix", &self.topology.prefix())
            .finish()
    }
}

/// The node URLs of an `AMQP_URL`: comma-separated, blanks around each
/// ignored. An empty list is refused.
pub fn parse_nodes(urls: &str) -> Result<Vec<String>, String> {
    let nodes: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if nodes.is_empty() {
        return Err("AMQP_URL needs at least one amqp:// URL".into());
    }
    if let Some(bad) = nodes
        .iter()
        .find(|u| !(u.starts_with("amqp://") || u.starts_with("amqps://")))
    {
        return Err(format!(
            "AMQP_URL: {} is not an amqp:// or amqps:// URL",
            crate::config::redact_url(bad)
        ));
    }
    Ok(nodes)
}

/// `host:port` of a node URL: what `/readyz` and the logs show (never the
/// credentials).
fn node_address(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!(
            "{}:{}",
            parsed.host_str().unwrap_or("?"),
            parsed.port().unwrap_or(if parsed.scheme() == "amqps" {
                5671
            } else {
                5672
            })
        ),
        Err(_) => crate::config::redact_url(url),
    }
}

impl Broker {
    /// A handle that connects on first use. Use [`Broker::connect`] to fail
    /// fast at start-up instead. `urls` is one node's URL or several,
    /// comma-separated; a list that [`parse_nodes`] refuses is kept as one
    /// URL, which then fails to connect with lapin's own error.
    pub fn lazy(urls: impl Into<String>, topology: Topology) -> Self {
        let urls = urls.into();
        let nodes = parse_nodes(&urls).unwrap_or_else(|_| vec![urls]);
        Self::on_nodes(nodes, topology)
    }

    fn on_nodes(nodes: Vec<String>, topology: Topology) -> Self {
        Self {
            nodes,
            topology,
            confirm_timeout: Duration::from_secs(5),
            session: RwLock::new(None),
            reconnect: tokio::sync::Mutex::new(()),
            last_node: AtomicUsize::new(0),
            reconnections: AtomicU64::new(0),
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
        Self::on_nodes(self.nodes.clone(), topology)
    }

    /// `host:port` of the node the current connection is on, if one is
    /// open (for `/readyz`).
    pub fn node(&self) -> Option<String> {
        self.current().map(|s| node_address(&self.nodes[s.node]))
    }

    /// Connections opened after the first: each one a reconnect after a
    /// lost connection (for the metrics).
    pub fn reconnections(&self) -> u64 {
        self.reconnections.load(Ordering::Relaxed)
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
        let session = self.open_any().await?;
        *self.session.write().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
        let node = node_address(&self.nodes[session.node]);
        if self.last_node.swap(session.node + 1, Ordering::Relaxed) == 0 {
            tracing::info!(
                prefix = self.topology.prefix(),
                node,
                "connected to the broker"
            );
        } else {
            self.reconnections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                prefix = self.topology.prefix(),
                node,
                "reconnected to the broker"
            );
        }
        Ok(session)
    }

    /// Tries each node once, starting with the one after the node of the
    /// last session (the first node if there was none), and returns the
    /// first session opened. The error is the last node's.
    async fn open_any(&self) -> anyhow::Result<Session> {
        let count = self.nodes.len();
        let first = self.last_node.load(Ordering::Relaxed) % count;
        let mut last_error = None;
        for offset in 0..count {
            let node = (first + offset) % count;
            let result = tokio::time::timeout(CONNECT_TIMEOUT, self.open_session(node))
                .await
                .map_err(|_| anyhow::Error::new(BrokerTimeout(CONNECT_TIMEOUT)))
                .and_then(|r| r);
            match result {
                Ok(session) => return Ok(session),
                Err(err) => {
                    if count > 1 {
                        tracing::warn!(
                            node = node_address(&self.nodes[node]),
                            error = format!("{err:#}"),
                            "broker node unavailable; trying the next"
                        );
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no broker node to connect to")))
    }

    async fn open_session(&self, node: usize) -> anyhow::Result<Session> {
        let connection = Connection::connect(&self.nodes[node], ConnectionProperties::default())
            .await
            .with_context(|| {
                format!(
                    "connecting to the broker at {}",
                    node_address(&self.nodes[node])
                )
            })?;
        let publisher = connection
            .create_channel()
            .await
            .context("opening a channel")?;
        self.topology.declare(&publisher).await?;
        // Confirms: a publish counts only once the broker has the message
        // (for a quorum queue: once a majority of its replicas has it).
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        Ok(Session {
            connection: Arc::new(connection),
            publisher,
            node,
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
            Err(PublishError::Unavailable(_) | PublishError::Timeout(_) | PublishError::Nacked)
        ) {
            // A silent or broken connection: start afresh next time. A nack
            // too: no queue has a length limit, so the broker refuses only
            // when a queue cannot take the message now (a quorum queue
            // without a leader, after a node died); a new connection, to
            // the next node, finds the queue's new leader.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_list_is_split_on_commas_and_every_node_must_be_amqp() {
        assert_eq!(
            parse_nodes("amqp://a:5672/%2f"),
            Ok(vec!["amqp://a:5672/%2f".to_owned()])
        );
        assert_eq!(
            parse_nodes(" amqp://a:1/%2f , amqps://b:2/%2f,"),
            Ok(vec![
                "amqp://a:1/%2f".to_owned(),
                "amqps://b:2/%2f".to_owned()
            ])
        );
        assert!(parse_nodes(" , ").is_err());
        let err = parse_nodes("amqp://a/%2f,http://u:secret@b/").expect_err("http");
        assert!(!err.contains("secret"), "no password in the error: {err}");
    }

    #[test]
    fn a_node_is_named_by_host_and_port_never_by_its_credentials() {
        assert_eq!(
            node_address("amqp://guest:pw@10.0.0.2:5682/%2f"),
            "10.0.0.2:5682"
        );
        assert_eq!(node_address("amqp://rabbit1/%2f"), "rabbit1:5672");
        assert_eq!(node_address("amqps://rabbit1/%2f"), "rabbit1:5671");
    }

    #[test]
    fn a_lazy_broker_is_on_no_node_until_it_connects() {
        let broker = Broker::lazy("amqp://a:1/%2f,amqp://b:2/%2f", Topology::new("t"));
        assert_eq!(broker.nodes.len(), 2);
        assert_eq!(broker.node(), None);
        assert_eq!(broker.reconnections(), 0);
    }
}
