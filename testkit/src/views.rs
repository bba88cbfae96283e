//! What the database, the broker and the simulator hold now, and waiting
//! for it to change: poll with a deadline, never sleep as synchronisation.

use std::collections::HashMap;
use std::time::Duration;

use common::processor::SimStats;
use common::queue::{Broker, Topology};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{json, Value};

use crate::TestApp;

impl TestApp {
    /// Rows of `table`.
    pub async fn count(&self, table: &str) -> i64 {
        self.count_where(table, "true").await
    }

    /// Rows of `table` where `condition` (SQL) holds.
    pub async fn count_where(&self, table: &str, condition: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {condition}"))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|err| panic!("count {table} where {condition}: {err}"))
    }

    /// Begins a transaction and runs `lock` (a `LOCK TABLE` statement) in
    /// it, to hold the services' statements back; the lock lasts until the
    /// transaction is rolled back or dropped.
    pub async fn hold_lock(&self, lock: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut holder = self.pool.begin().await.expect("begin");
        sqlx::query(lock).execute(&mut *holder).await.expect("lock");
        holder
    }

    /// Status of every payment, by status.
    pub async fn status_counts(&self) -> HashMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>("SELECT status, count(*) FROM payments GROUP BY status")
            .fetch_all(&self.pool)
            .await
            .expect("status counts")
            .into_iter()
            .collect()
    }

    /// Payments with this status.
    pub async fn count_status(&self, status: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = $1")
            .bind(status)
            .fetch_one(&self.pool)
            .await
            .expect("count payments")
    }

    pub async fn payment_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM payments")
            .fetch_one(&self.pool)
            .await
            .expect("count payments")
    }

    /// Polls the database until no payment is `pending` or `processing`
    /// (and there are `expected` payments), or panics after `timeout`.
    pub async fn wait_all_terminal(
        &self,
        expected: i64,
        timeout: Duration,
    ) -> HashMap<String, i64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let counts = self.status_counts().await;
            let total: i64 = counts.values().sum();
            let open = counts.get("pending").copied().unwrap_or(0)
                + counts.get("processing").copied().unwrap_or(0);
            if total == expected && open == 0 {
                return counts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "payments not terminal after {timeout:?}: {counts:?} (expected {expected})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until exactly `n` rows of `table` meet `condition` (`what`
    /// names the wait), or panics after `timeout`.
    pub async fn wait_count_where(
        &self,
        what: &str,
        table: &str,
        condition: &str,
        n: i64,
        timeout: Duration,
    ) {
        self.eventually(what, timeout, || async {
            (self.count_where(table, condition).await == n).then_some(())
        })
        .await;
    }

    /// Polls `check` until it returns `Some`, or panics after `timeout`.
    pub async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Statements of this test's database whose text contains `statement`
    /// and that wait for a lock (one the test holds).
    pub async fn lock_waiters(&self, statement: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND strpos(query, $1) > 0",
        )
        .bind(statement)
        .fetch_one(&self.pool)
        .await
        .expect("pg_stat_activity")
    }

    /// Waits until exactly one such statement waits ([`Self::lock_waiters`]).
    pub async fn wait_for_lock_wait(&self, statement: &str) {
        let what = format!("`{statement}` waiting for the lock");
        self.eventually(&what, Duration::from_secs(10), || async {
            (self.lock_waiters(statement).await == 1).then_some(())
        })
        .await;
    }

    pub async fn sim_stats(&self) -> SimStats {
        self.http
            .get(format!("{}/_sim/stats", self.sim_url))
            .send()
            .await
            .expect("sim stats")
            .json()
            .await
            .expect("sim stats json")
    }

    pub async fn set_faults(&self, faults: Value) {
        let response = self
            .http
            .put(format!("{}/_sim/faults", self.sim_url))
            .json(&faults)
            .send()
            .await
            .expect("set faults");
        assert!(response.status().is_success(), "faults accepted");
    }

    /// Messages ready in a queue of this test's prefix (`process`, `dead`…).
    pub async fn queue_depth(&self, suffix: &str) -> u32 {
        self.try_queue_depth(suffix).await.expect("queue exists")
    }

    /// Messages ready in a queue of this test's prefix; `None` if the queue
    /// is not declared (yet).
    pub async fn try_queue_depth(&self, suffix: &str) -> Option<u32> {
        let broker = Broker::connect(self.broker_url(), Topology::new(&self.prefix))
            .await
            .expect("broker");
        let channel = broker.open_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                &format!("{}.{suffix}", self.prefix),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        broker.close().await;
        queue.ok().map(|q| q.message_count())
    }

    /// A broker handle for this test's prefix (with the workers' retry tiers).
    pub async fn broker(&self) -> Broker {
        let topology =
            Topology::new(&self.prefix).with_retry_delays(&self.options.worker.retry_delays);
        Broker::connect(self.broker_url(), topology)
            .await
            .expect("broker")
    }

    /// Waits until the queue `suffix` of this test's prefix holds `depth`
    /// messages ready.
    pub async fn wait_queue_depth(&self, suffix: &str, depth: u32) {
        self.eventually(
            &format!("{depth} message(s) in {suffix}"),
            Duration::from_secs(10),
            || async { (self.try_queue_depth(suffix).await == Some(depth)).then_some(()) },
        )
        .await;
    }

    /// Polls `GET /v1/payments/:id` until `check` holds (30 s); the payment.
    pub async fn wait_payment(
        &self,
        id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.eventually(what, Duration::from_secs(30), || async {
            let payment = self.payment(id).await;
            check(&payment).then_some(payment)
        })
        .await
    }

    /// Takes the next message of the queue `suffix` of this test's prefix
    /// (acked: it is the test's now), waiting up to 10 s for one: its body
    /// and headers.
    pub async fn take_message(&self, suffix: &str) -> (Vec<u8>, Option<FieldTable>) {
        let broker = self.broker().await;
        let channel = broker.open_channel().await.expect("channel");
        let queue = format!("{}.{suffix}", self.prefix);
        let message = self
            .eventually(
                &format!("a message in {queue}"),
                Duration::from_secs(10),
                || async {
                    channel
                        .basic_get(&queue, BasicGetOptions { no_ack: true })
                        .await
                        .expect("basic.get")
                },
            )
            .await;
        let _ = channel.close(200, "taken").await;
        broker.close().await;
        let headers = message.delivery.properties.headers().clone();
        (message.delivery.data, headers)
    }

    /// Empties the queue `suffix` of this test's prefix.
    pub async fn purge(&self, suffix: &str) {
        let broker = self.broker().await;
        let channel = broker.open_channel().await.expect("channel");
        channel
            .queue_purge(
                &format!("{}.{suffix}", self.prefix),
                lapin::options::QueuePurgeOptions::default(),
            )
            .await
            .expect("purge");
        let _ = channel.close(200, "purged").await;
        broker.close().await;
    }

    /// The reasons of the dead letters of the payments' queue, oldest first
    /// (listing consumes nothing).
    pub async fn dead_reasons(&self) -> Vec<String> {
        let broker = self.broker().await;
        let letters = common::dead_letters::list(&broker, 100)
            .await
            .expect("list dead letters");
        broker.close().await;
        letters.into_iter().map(|l| l.reason.to_string()).collect()
    }

    /// Dead-letters `n` payments by running them through a processor outage
    /// (with [`crate::Options::one_attempt`], at once); their ids. The
    /// outage is over when this returns.
    pub async fn dead_letter(&self, n: usize) -> Vec<String> {
        self.set_faults(json!({"outage": true})).await;
        let ids = self.submit(crate::cards::VISA, n).await;
        let expected = i64::try_from(n).expect("a small n");
        self.wait_all_terminal(expected, Duration::from_secs(60))
            .await;
        self.wait_queue_depth("dead", u32::try_from(n).expect("a small n"))
            .await;
        self.set_faults(json!({"outage": false})).await;
        ids
    }

    /// The simulator charged `n` payments, none twice.
    pub async fn assert_charged_once_each(&self, n: u64) {
        let stats = self.sim_stats().await;
        assert_eq!(
            stats.duplicate_charges, 0,
            "no payment charged twice: {stats:?}"
        );
        assert_eq!(stats.charges, n, "one charge per payment: {stats:?}");
    }
}
