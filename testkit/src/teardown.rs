//! Removing what a test made, whether it passed or panicked.
//!
//! A test that fails an assertion unwinds past any `cleanup().await` it
//! meant to reach, so removal cannot be left to the test: [`TestApp`]'s
//! `Drop` stops its in-process services, deletes its exchanges and queues
//! (the payments' and the webhooks', retry tiers included) and drops its
//! database `WITH (FORCE)`. `Drop` cannot `.await`, and blocking the test's
//! runtime on its own tasks could deadlock, so the work runs on a thread of
//! its own with a small runtime of its own, which talks to PostgreSQL and
//! RabbitMQ over new connections and needs nothing from the test's runtime.
//! Child processes are the test's own values, spawned with `kill_on_drop`:
//! unwinding drops them, which kills them.
//!
//! [`TestApp`]: crate::TestApp

use std::time::Duration;

use anyhow::Context as _;
use common::queue::Topology;
use sqlx::Connection as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long one service may take to stop gracefully when the test is over.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long removing the database and queues may take.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// An in-process service (API, worker, simulator) and how to stop it.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) stop: CancellationToken,
    pub(crate) handle: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Asks the service to stop and waits for it: its own error, or a panic.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.handle
            .await
            .with_context(|| format!("the {} task panicked", self.name))?
    }

    /// Asks the service to stop and waits up to `timeout`, then aborts it.
    async fn stop_within(mut self, timeout: Duration) -> anyhow::Result<()> {
        self.stop.cancel();
        match tokio::time::timeout(timeout, &mut self.handle).await {
            Ok(joined) => joined.with_context(|| format!("the {} task panicked", self.name))?,
            Err(_) => {
                self.handle.abort();
                anyhow::bail!("the {} did not stop within {timeout:?}", self.name)
            }
        }
    }

    /// Stops it now, without waiting (no runtime thread is left to run its
    /// shutdown). Tasks it spawned may run on until the runtime ends.
    pub(crate) fn abort(&self) {
        self.stop.cancel();
        self.handle.abort();
    }
}

/// What a test leaves in the shared PostgreSQL and RabbitMQ.
#[derive(Debug, Clone)]
pub struct Leftovers {
    pub db_name: String,
    /// Every topology declared under the test's prefix, with its retry tiers.
    pub topologies: Vec<Topology>,
}

impl Leftovers {
    /// Deletes the queues and exchanges, then drops the database (closing
    /// every connection still open to it). Each part is tried even if
    /// another failed; the errors are returned together.
    pub async fn remove(&self) -> anyhow::Result<()> {
        let work = async {
            let queues = self.delete_topologies().await;
            let database = self.drop_database().await;
            match (queues, database) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
                (Err(q), Err(d)) => Err(q.context(format!("and: {d:#}"))),
            }
        };
        tokio::time::timeout(REMOVE_TIMEOUT, work)
            .await
            .map_err(|_| anyhow::anyhow!("removal took longer than {REMOVE_TIMEOUT:?}"))?
    }

    async fn delete_topologies(&self) -> anyhow::Result<()> {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let connection =
            lapin::Connection::connect(&crate::amqp_url(), lapin::ConnectionProperties::default())
                .await
                .context("connecting to RabbitMQ to delete the test's queues")?;
        let mut channel = connection.create_channel().await?;
        let mut failed = Vec::new();
        for topology in &self.topologies {
            for queue in topology.queues() {
                // Deleting a queue that is not there succeeds in RabbitMQ;
                // any other error closes the channel, so open another.
                if let Err(err) = channel
                    .queue_delete(&queue, QueueDeleteOptions::default())
                    .await
                {
                    failed.push(format!("queue {queue}: {err}"));
                    channel = connection.create_channel().await?;
                }
            }
            if let Err(err) = channel
                .exchange_delete(topology.exchange(), ExchangeDeleteOptions::default())
                .await
            {
                failed.push(format!("exchange {}: {err}", topology.exchange()));
                channel = connection.create_channel().await?;
            }
        }
        let _ = connection.close(200, "test over").await;
        anyhow::ensure!(failed.is_empty(), "deleting {}", failed.join("; "));
        Ok(())
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", crate::pg_server()))
            .await
            .context("connecting to PostgreSQL to drop the test's database")?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.db_name
        ))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping {}", self.db_name))?;
        let _ = admin.close().await;
        Ok(())
    }
}

/// Stops `services` and removes `leftovers` from inside `Drop`; what went
/// wrong stopping the services.
///
/// `graceful`: the test's runtime has worker threads that go on running the
/// services' tasks while this thread waits, so each service is asked to stop
/// and waited for (as `cleanup` does) before anything is removed, also when
/// the test panicked: a service still running (its outbox or event relay
/// mid-pass) would declare its queues again after they were deleted.
/// Otherwise the services are aborted and only the removal is waited for.
pub(crate) fn on_drop(services: Vec<Service>, leftovers: Leftovers, graceful: bool) -> Vec<String> {
    if !graceful {
        for service in &services {
            service.abort();
        }
    }
    let work = std::thread::Builder::new()
        .name(format!("teardown {}", leftovers.db_name))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => return vec![format!("no runtime for the teardown: {err}")],
            };
            runtime.block_on(async move {
                let mut failures = Vec::new();
                if graceful {
                    for service in services {
                        let name = service.name;
                        if let Err(err) = service.stop_within(STOP_TIMEOUT).await {
                            failures.push(format!("the {name} did not stop cleanly: {err:#}"));
                        }
                    }
                }
                if let Err(err) = leftovers.remove().await {
                    // Not a failure of the test: say what is left.
                    eprintln!(
                        "testkit: could not remove everything of {}: {err:#}",
                        leftovers.db_name
                    );
                }
                failures
            })
        });
    match work.map(std::thread::JoinHandle::join) {
        Ok(Ok(failures)) => failures,
        Ok(Err(_)) => vec!["the teardown thread panicked".into()],
        Err(err) => vec![format!("cannot start the teardown thread: {err}")],
    }
}
