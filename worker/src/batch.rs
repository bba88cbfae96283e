//! Statements that many steps want at once, made as one (DESIGN.md §16).
//!
//! A worker runs up to `WORKER_CONCURRENCY` steps, and under load hundreds
//! of them want the same statement at the same moment: claim my payment,
//! record my approval. Each step hands its item to a [`Batch`] and waits for
//! its own answer; one task per batch takes every item waiting (up to
//! [`MAX_ITEMS`]), runs one statement for all of them, and answers each. It
//! never waits to fill a batch: an idle worker's statement goes at once, and
//! a batch grows only while the previous statement runs, so batching adds
//! no latency of its own (group commit, as PostgreSQL does for WAL).
//!
//! The guarantees are the statement's own: one statement is one commit, so
//! an item is answered only after its row change is committed, and a step
//! acks its message only after that (the consumer's rule is unchanged). A
//! crash before the commit leaves every item of the batch as it was, to be
//! taken over like any unrecorded step.
//!
//! An unavailable database is waited out here ([`waiting_out`], which
//! [`Context::db`] uses too), with the steps waiting for their answers. Any
//! other error splits the batch: each item runs alone, so one bad row fails
//! only its own step.
//!
//! Two statements are batched today, both a payment's: its claim
//! ([`Claims`]) and its approval ([`Approvals`]).
//!
//! [`Context::db`]: crate::context::Context::db

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use common::db::lifecycle::Audit;
use common::db::payments::{self, PaymentRow};
use common::domain::PaymentId;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::StepError;

/// Items one statement takes at most.
pub const MAX_ITEMS: usize = 128;

/// One kind of statement that runs for many items.
pub(crate) trait Statement: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    /// The answer for one item.
    type Answer: Send + 'static;
    /// Two items with one key never share a statement (the second waits for
    /// the next one): one statement changes a row once.
    type Key: Eq + Hash + Send;

    fn key(item: &Self::Item) -> Self::Key;

    /// Runs the statement for `items`, answering each, in order.
    fn run<'a>(
        &'a self,
        pool: &'a PgPool,
        items: &'a [Self::Item],
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Answer>>> + Send + 'a;
}

type Reply<A> = oneshot::Sender<Result<A, StepError>>;

/// A queue of items for one [`Statement`], and the task that runs it.
pub(crate) struct Batch<S: Statement> {
    queue: mpsc::UnboundedSender<(S::Item, Reply<S::Answer>)>,
}

/// What the task that runs a batch's statements needs of the worker.
#[derive(Clone)]
pub(crate) struct Database {
    pub pool: PgPool,
    /// The worker's turns at the database (`Context::db`'s).
    pub turns: Arc<Semaphore>,
    pub shutdown: CancellationToken,
}

impl<S: Statement> Batch<S> {
    /// Starts the task; it ends when the batch is dropped.
    pub fn start(statement: S, db: Database) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(serve(statement, db, waiting));
        Self { queue }
    }

    /// Runs the statement for `item`, with other steps' items, and answers
    /// after the commit.
    pub async fn run(&self, item: S::Item) -> Result<S::Answer, StepError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
            .map_err(|_| StepError::Interrupted)?;
        answer.await.unwrap_or(Err(StepError::Interrupted))
    }
}

async fn serve<S: Statement>(
    statement: S,
    db: Database,
    mut waiting: mpsc::UnboundedReceiver<(S::Item, Reply<S::Answer>)>,
) {
    // Items that met another of the same key in a batch: first in the next.
    let mut later: Vec<(S::Item, Reply<S::Answer>)> = Vec::new();
    loop {
        let (mut batch, mut keys, mut deferred) = (Vec::new(), HashSet::new(), Vec::new());
        let mut add = |next: (S::Item, Reply<S::Answer>), batch: &mut Vec<_>| {
            if keys.insert(S::key(&next.0)) {
                batch.push(next);
            } else {
                deferred.push(next);
            }
        };
        for next in std::mem::take(&mut later) {
            add(next, &mut batch);
        }
        if batch.is_empty() {
            match waiting.recv().await {
                Some(first) => add(first, &mut batch),
                None => return,
            }
        }
        while batch.len() < MAX_ITEMS {
            let Ok(next) = waiting.try_recv() else { break };
            add(next, &mut batch);
        }
        later = deferred;
        let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match run_waiting_out(&statement, &db, &items).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(StepError::Database(err)) if items.len() > 1 => {
                tracing::warn!(error = %err, items = items.len(), "a batched statement failed; running its items one by one");
                for (item, reply) in items.iter().zip(replies) {
                    let alone = run_waiting_out(&statement, &db, std::slice::from_ref(item))
                        .await
                        .map(|mut answers| answers.remove(0));
                    let _ = reply.send(alone);
                }
            }
            Err(err) => {
                // One item (the error is its own), or the worker shut down
                // while waiting: the steps leave their messages unacked.
                let mut err = Some(err);
                for reply in replies {
                    let _ = reply.send(Err(err.take().unwrap_or(StepError::Interrupted)));
                }
            }
        }
    }
}

// The statements batched today: a payment's claim and its approval.

/// Claims of payments ([`payments::claim_many`]), under this worker's
/// lease: the answer is the claimed row, or `None` when it cannot be
/// claimed.
pub(crate) struct Claims {
    pub lease: Duration,
    pub dead_after: Duration,
    pub worker_id: String,
}

impl Statement for Claims {
    type Item = PaymentId;
    type Answer = Option<PaymentRow>;
    type Key = PaymentId;

    fn key(id: &PaymentId) -> PaymentId {
        *id
    }

    async fn run(&self, pool: &PgPool, ids: &[PaymentId]) -> sqlx::Result<Vec<Self::Answer>> {
        let audit = Audit {
            actor: &self.worker_id,
            reason: "claimed",
        };
        let claimed = payments::claim_many(pool, ids, self.lease, self.dead_after, audit).await?;
        Ok(answer_by_id(ids, claimed, |row| row))
    }
}

/// Approved charges recorded ([`payments::succeed_many`]): the answer is
/// whether this claim recorded it (`false`: the claim was lost meanwhile).
pub(crate) struct Approvals {
    pub worker_id: String,
}

impl Statement for Approvals {
    type Item = payments::Approval;
    type Answer = bool;
    type Key = PaymentId;

    fn key(approval: &payments::Approval) -> PaymentId {
        approval.id
    }

    async fn run(
        &self,
        pool: &PgPool,
        approvals: &[payments::Approval],
    ) -> sqlx::Result<Vec<bool>> {
        let recorded = payments::succeed_many(pool, approvals, &self.worker_id).await?;
        let ids: Vec<PaymentId> = approvals.iter().map(|a| a.id).collect();
        Ok(answer_by_id(&ids, recorded, |row| row.is_some()))
    }
}

/// Each of `ids`' row among `rows` (a statement returns the rows it
/// changed, in no set order), mapped by `answer`.
fn answer_by_id<A>(
    ids: &[PaymentId],
    rows: Vec<PaymentRow>,
    answer: impl Fn(Option<PaymentRow>) -> A,
) -> Vec<A> {
    let mut rows: HashMap<PaymentId, PaymentRow> = rows
        .into_iter()
        .map(|row| (row.payment_id(), row))
        .collect();
    ids.iter().map(|id| answer(rows.remove(id))).collect()
}

/// The statement, waiting out an unavailable database.
async fn run_waiting_out<S: Statement>(
    statement: &S,
    db: &Database,
    items: &[S::Item],
) -> Result<Vec<S::Answer>, StepError> {
    waiting_out(&db.turns, &db.shutdown, || statement.run(&db.pool, items)).await
}

/// [`Context::db`]'s loop, and the batches' tasks': `op` after a turn at
/// the database (`turns`), again with growing delays while the database is
/// unavailable or busy, until it answers or `shutdown` comes.
pub(crate) async fn waiting_out<T, F, Fut>(
    turns: &Semaphore,
    shutdown: &CancellationToken,
    mut op: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = sqlx::Result<T>>,
{
    let mut delays = common::retry::reconnect_delays();
    let mut warned = false;
    loop {
        let result = {
            // Never closed, so never an error; without a turn the
            // statement would merely queue in the pool.
            let _turn = turns.acquire().await.ok();
            op().await
        };
        match result {
            Ok(value) => return Ok(value),
            // Unreachable, or up but unable right now (a lock or
            // statement timeout, a deadlock): wait with growing delays,
            // never requeue, so the message's delivery count (the
            // poison check) does not grow with the database's trouble.
            Err(err) if common::db::is_transient(&err) => {
                if !warned {
                    tracing::warn!(error = %err, "database unavailable or busy; holding the message until it answers");
                    warned = true;
                }
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tokio::select! {
                    () = shutdown.cancelled() => return Err(StepError::Interrupted),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(err) => return Err(StepError::Database(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers each item with ten times itself, keyed by the item, and
    /// keeps the batches it was given.
    #[derive(Default)]
    struct Times10 {
        batches: Arc<Mutex<Vec<Vec<u32>>>>,
    }

    impl Statement for Times10 {
        type Item = u32;
        type Answer = u32;
        type Key = u32;

        fn key(item: &u32) -> u32 {
            *item
        }

        async fn run(&self, _pool: &PgPool, items: &[u32]) -> sqlx::Result<Vec<u32>> {
            self.batches
                .lock()
                .expect("not poisoned")
                .push(items.to_vec());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(items.iter().map(|i| i * 10).collect())
        }
    }

    fn database() -> Database {
        Database {
            // Never connected: the statement above does not use it.
            pool: PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("a lazy pool"),
            turns: Arc::new(Semaphore::new(1)),
            shutdown: CancellationToken::new(),
        }
    }

    #[tokio::test]
    async fn items_waiting_together_share_a_statement_but_one_key_is_never_twice_in_one() {
        let statement = Times10::default();
        let batches = statement.batches.clone();
        let batch = Arc::new(Batch::start(statement, database()));
        // The first runs alone (nothing waits yet); the rest arrive while it
        // runs, among them three of one key.
        let items = [1, 2, 3, 7, 7, 7, 4];
        let runs: Vec<_> = items
            .iter()
            .map(|&item| {
                let batch = batch.clone();
                tokio::spawn(async move { batch.run(item).await.ok() })
            })
            .collect();
        for (run, item) in runs.into_iter().zip(items) {
            assert_eq!(
                run.await.expect("the run finishes"),
                Some(item * 10),
                "each gets its own answer"
            );
        }
        let batches = batches.lock().expect("not poisoned").clone();
        assert!(
            batches.len() < items.len(),
            "items shared statements: {batches:?}"
        );
        for b in &batches {
            let keys: HashSet<_> = b.iter().collect();
            assert_eq!(
                keys.len(),
                b.len(),
                "a key twice in one statement: {batches:?}"
            );
        }
        let mut seen: Vec<u32> = batches.concat();
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 2, 3, 4, 7, 7, 7], "every item ran once");
    }
}
