//! Exchange and queue names and their declaration (DESIGN.md §4).
//!
//! Every process declares the topology at start; declarations are idempotent
//! as long as the arguments do not change, which is why a retry tier's delay
//! is part of its queue name.

use std::time::Duration;

use anyhow::Context as _;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::headers;

/// Redeliveries after which the broker dead-letters a message on its own: the
/// safety net for a message that kills every worker that takes it. A healthy
/// message is redelivered only when a worker or connection dies while holding
/// it, far fewer times than this.
pub const DELIVERY_LIMIT: i64 = 20;

/// Nodes each queue is replicated on, at most (fewer on a smaller cluster).
pub const QUORUM_GROUP_SIZE: i32 = 3;

#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    retry_delays: Vec<Duration>,
}

impl Topology {
    /// The topology the API needs: exchange, main queue, dead-letter queue.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            retry_delays: Vec::new(),
        }
    }

    /// The webhook deliveries' own exchange and queues under `prefix`
    /// (`<prefix>.webhooks.process`, `….dead`, `….retry.<ms>`): their own
    /// backlog, tiers and dead letters, apart from the payments'.
    pub fn webhooks(prefix: &str) -> Self {
        Self::new(format!("{prefix}.webhooks"))
    }

    /// Adds one delay queue per retry tier (the worker's view).
    pub fn with_retry_delays(mut self, delays: &[Duration]) -> Self {
        self.retry_delays = delays.to_vec();
        self
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The durable direct exchange every message goes through.
    pub fn exchange(&self) -> &str {
        &self.prefix
    }

    pub fn process_queue(&self) -> String {
        format!("{}.process", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.{}", self.prefix, Self::retry_key(delay))
    }

    pub const PROCESS_KEY: &'static str = "process";
    pub const DEAD_KEY: &'static str = "dead";

    pub fn retry_key(delay: Duration) -> String {
        format!("retry.{}ms", delay.as_millis())
    }

    pub fn retry_delays(&self) -> &[Duration] {
        &self.retry_delays
    }

    /// Every queue: main, dead letters, one per retry tier.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.process_queue(), self.dead_queue()];
        queues.extend(self.retry_delays.iter().map(|d| self.retry_queue(*d)));
        queues
    }

    /// Declares everything. Safe to call from any number of processes.
    pub async fn declare(&self, channel: &Channel) -> anyhow::Result<()> {
        channel
            .exchange_declare(
                self.exchange(),
                ExchangeKind::Direct,
                // Durable: survives a broker restart. Not auto-delete: queues
                // come and go (tests), the exchange stays.
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("declaring the exchange")?;

        // Every queue is a quorum queue (DESIGN.md §15): replicated on up to
        // three nodes of a cluster (the broker caps the group at the
        // cluster's size, so one node works as before), and a publish is
        // confirmed only once a majority holds it, so losing one node of
        // three loses no message.
        //
        // The main queue also counts deliveries, which gives the poison
        // message safety net: past the limit a message goes to the
        // dead-letter queue through our own exchange. Dead-lettering is
        // at-least-once (the broker keeps the message until the target
        // queue confirms it, instead of dropping it if a node dies in
        // between), which the broker allows only with `reject-publish`
        // overflow; no queue has a length limit, so nothing is rejected.
        let main_args = Self::quorum_args(&[
            ("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT)),
            ("x-dead-letter-exchange", headers::string(self.exchange())),
            ("x-dead-letter-routing-key", headers::string(Self::DEAD_KEY)),
            ("x-dead-letter-strategy", headers::string("at-least-once")),
            ("x-overflow", headers::string("reject-publish")),
        ]);
        self.declare_bound(channel, &self.process_queue(), Self::PROCESS_KEY, main_args)
            .await?;

        // The dead-letter queue dead-letters nothing itself. An operator
        // lists it by taking messages without acking and closing the
        // channel; a quorum queue delivers returned messages first, in the
        // order they were returned, so the list stays oldest first.
        self.declare_bound(
            channel,
            &self.dead_queue(),
            Self::DEAD_KEY,
            Self::quorum_args(&[]),
        )
        .await?;

        // One queue per retry tier, because TTL expiry happens only at the
        // head of a queue: mixing delays in one queue would hold short delays
        // behind long ones. Expired messages dead-letter back to the main
        // queue, at least once (see above), so a node lost while a retry
        // waits loses no payment. Quorum queues have message TTL since
        // RabbitMQ 3.10.
        for delay in &self.retry_delays {
            let args = Self::quorum_args(&[
                (
                    "x-message-ttl",
                    AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                ),
                ("x-dead-letter-exchange", headers::string(self.exchange())),
                (
                    "x-dead-letter-routing-key",
                    headers::string(Self::PROCESS_KEY),
                ),
                ("x-dead-letter-strategy", headers::string("at-least-once")),
                ("x-overflow", headers::string("reject-publish")),
            ]);
            self.declare_bound(
                channel,
                &self.retry_queue(*delay),
                &Self::retry_key(*delay),
                args,
            )
            .await?;
        }
        Ok(())
    }

    /// A quorum queue's arguments plus `extra`. Redeclaring a queue that
    /// exists with other arguments (a classic queue of an older version,
    /// say) fails with `PRECONDITION_FAILED`: see the README on migrating.
    fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
        let mut args = vec![
            ("x-queue-type", headers::string("quorum")),
            // Replicas: a majority of three survives one node's loss.
            (
                "x-quorum-initial-group-size",
                AMQPValue::LongInt(QUORUM_GROUP_SIZE),
            ),
        ];
        args.extend(extra.iter().cloned());
        headers::build(&args)
    }

    async fn declare_bound(
        &self,
        channel: &Channel,
        queue: &str,
        routing_key: &str,
        args: FieldTable,
    ) -> anyhow::Result<()> {
        channel
            .queue_declare(
                queue,
                // Durable, shared by all workers, kept when consumers leave.
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .with_context(|| format!("declaring queue {queue}"))?;
        channel
            .queue_bind(
                queue,
                self.exchange(),
                routing_key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding queue {queue}"))?;
        Ok(())
    }

    /// Deletes the exchange and every queue (tests clean up this way).
    pub async fn delete(&self, channel: &Channel) -> anyhow::Result<()> {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let mut queues = vec![self.process_queue(), self.dead_queue()];
        queues.extend(self.retry_delays.iter().map(|d| self.retry_queue(*d)));
        for queue in queues {
            channel
                .queue_delete(&queue, QueueDeleteOptions::default())
                .await
                .with_context(|| format!("deleting queue {queue}"))?;
        }
        channel
            .exchange_delete(self.exchange(), ExchangeDeleteOptions::default())
            .await
            .context("deleting the exchange")?;
        Ok(())
    }
}
