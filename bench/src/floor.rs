//! The floor: what PostgreSQL and RabbitMQ on this machine can do for one
//! payment's work with none of our services in between; end-to-end
//! throughput is reported as a share of it. PostgreSQL runs the system's own
//! `common::db` calls (insert, claim, succeed, outbox delete batched by 500)
//! over a pool of the API's size; RabbitMQ publishes one `Job` per payment
//! with a confirm and consumes it with manual acks, one consumer per worker
//! of the largest scenario; pgbench does the same SQL with prepared
//! statements. A sweep over payments in flight picks each one's best level
//! (the best of noisy probes errs towards a higher floor, i.e. against the
//! system). Each runs alone, then both at once, in rounds; the best run of
//! each phase counts, and the floor is the best run of both at once, since
//! in the system they share the same cores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use common::config::DatabaseArgs;
use common::db::lifecycle::Audit;
use common::db::payments::{self, NewPayment};
use common::db::{api_keys, outbox};
use common::domain::{Amount, CardToken, Currency, PaymentId};
use common::processor::{CardDetails, ProcessorResponse};
use common::queue::{Broker, Job, Topology};
use futures_util::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::pgbench::{Bindings, Pgbench};
use crate::procstat::{ClockTicks, CpuSnapshot, CpuUsage};
use crate::system::{Cleanup, Env};

/// The API's default `OUTBOX_RELAY_AFTER`.
const RELAY_AFTER: Duration = Duration::from_secs(5);
/// The worker's default `LEASE_SECS`.
const LEASE: Duration = Duration::from_secs(60);
/// Who the floor's claims and history rows name.
const ACTOR: &str = "bench-floor";
/// The API's outbox deleter batch.
const DELETE_BATCH: usize = 500;

/// One timed floor run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorPhase {
    pub seconds: f64,
    pub payments_per_s: f64,
    pub cpu: CpuUsage,
}

/// Throughput of each service alone at one concurrency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepPoint {
    pub in_flight: usize,
    pub postgres_per_s: f64,
    pub rabbitmq_per_s: f64,
    /// `None` when pgbench is not there.
    pub pgbench_per_s: Option<f64>,
}

/// The pgbench line of the floor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PgbenchFloor {
    /// `pgbench --version`, or why it was not measured.
    pub version: Option<String>,
    pub not_measured: Option<String>,
    /// The sweep's best concurrency (clients), used in the timed runs.
    pub in_flight: usize,
    pub runs: Vec<FloorPhase>,
    pub best_payments_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloorResult {
    pub payments: u64,
    pub pool_size: u32,
    pub consumers: usize,
    pub prefetch: u32,
    /// Payments per sweep level.
    pub probe: u64,
    pub sweep: Vec<SweepPoint>,
    /// The sweep's best concurrency for each, used in the timed phases.
    pub postgres_in_flight: usize,
    pub rabbitmq_in_flight: usize,
    /// Untimed payments run on each fresh database first.
    pub warmup: u64,
    /// Every timed run of each phase, in order.
    pub postgres_alone: Vec<FloorPhase>,
    pub rabbitmq_alone: Vec<FloorPhase>,
    pub together: Vec<FloorPhase>,
    /// The best run of both at once: see the module doc.
    pub floor_payments_per_s: f64,
    /// The lower of the two services' best separate runs, for reference.
    pub lower_of_separate_payments_per_s: f64,
    pub pgbench: PgbenchFloor,
}

/// The level with the highest rate (the last of equals), or `default`.
fn best_level(rates: impl Iterator<Item = (usize, f64)>, default: usize) -> usize {
    rates
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(default, |(level, _)| level)
}

/// Best throughput among runs.
pub fn best_rate(runs: &[FloorPhase]) -> f64 {
    runs.iter().map(|r| r.payments_per_s).fold(0.0, f64::max)
}

/// Timed runs of each phase. The best one counts: a transient stall of the
/// machine (seen on shared virtual machines) must not pass for the floor.
const REPEATS: usize = 2;

/// Concurrencies the sweep tries (up to the end-to-end submitter's).
const SWEEP: &[usize] = &[1, 2, 4, 8, 16, 32, 64];

/// Sweeps the concurrency, then runs the three timed floor phases at the
/// best one.
pub async fn run(
    env: &Env,
    cleanup: &Cleanup,
    clk: ClockTicks,
    payments: u64,
    max_in_flight: usize,
    consumers: usize,
) -> anyhow::Result<FloorResult> {
    // Every database is created first: CREATE DATABASE forces a checkpoint,
    // which must not land inside a timed phase. Each timed PostgreSQL run
    // gets a fresh database, so none starts with the previous run's rows.
    let pg_sweep = PgFloor::setup(env, cleanup, "floor_sweep").await?;
    let mut pg_alone_dbs = Vec::with_capacity(REPEATS);
    let mut pg_both_dbs = Vec::with_capacity(REPEATS);
    for round in 1..=REPEATS {
        pg_alone_dbs.push(PgFloor::setup(env, cleanup, &format!("floor_pg{round}")).await?);
        pg_both_dbs.push(PgFloor::setup(env, cleanup, &format!("floor_both{round}")).await?);
    }
    let mq = MqFloor::setup(env, cleanup, "floor_mq").await?;
    let consumers = consumers.max(1);
    let max_in_flight = max_in_flight.max(1);

    // The in-flight sweep: the same work at each concurrency, to run the
    // timed phases where each service does best (the floor is the best the
    // machine can do, not the rate at one arbitrary setting).
    let probe = (payments / 10).clamp(100, 2000);
    let levels: Vec<usize> = SWEEP
        .iter()
        .copied()
        .filter(|&l| l < max_in_flight)
        .chain([max_in_flight])
        .collect();
    // pgbench first, on its own: its clients are connections of their own,
    // and while it runs no other floor pool holds warm connections, so all
    // of them fit under `max_connections`.
    let (pgbench, pgbench_sweep) =
        pgbench_floor(env, cleanup, clk, payments, probe, &levels, max_in_flight).await?;
    eprintln!("[floor] in-flight sweep {levels:?}, {probe} payments per level");
    // Warm at the top level so the pool has opened all its connections (a
    // new PostgreSQL backend starts with cold caches and no prepared
    // statements) before any level is timed.
    pg_sweep.run(probe, max_in_flight).await?;
    analyze(&pg_sweep.pool).await?;
    mq.run(probe, max_in_flight, consumers).await?;
    let mut sweep = Vec::with_capacity(levels.len());
    for &level in &levels {
        let started = Instant::now();
        pg_sweep.run(probe, level).await?;
        let postgres = probe as f64 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        mq.run(probe, level, consumers).await?;
        let rabbitmq = probe as f64 / started.elapsed().as_secs_f64();
        let pgbench_per_s = pgbench_sweep.get(&level).copied();
        eprintln!(
            "  {level} in flight: PostgreSQL {postgres:.0}/s, RabbitMQ {rabbitmq:.0}/s{}",
            pgbench_per_s.map_or_else(String::new, |r| format!(", pgbench {r:.0}/s"))
        );
        sweep.push(SweepPoint {
            in_flight: level,
            postgres_per_s: postgres,
            rabbitmq_per_s: rabbitmq,
            pgbench_per_s,
        });
    }
    pg_sweep.teardown(env, cleanup).await?;
    let best = |rate: fn(&SweepPoint) -> f64| {
        best_level(sweep.iter().map(|p| (p.in_flight, rate(p))), max_in_flight)
    };
    let pg_in_flight = best(|p| p.postgres_per_s);
    let mq_in_flight = best(|p| p.rabbitmq_per_s);

    // Untimed first, at the top level so every connection of the pool is
    // open and warm: fresh tables, cold caches and new connections would
    // otherwise count against the first timed phase only.
    let warmup = probe;
    for db in pg_alone_dbs.iter().chain(&pg_both_dbs) {
        db.run(warmup, max_in_flight).await?;
        analyze(&db.pool).await?;
    }

    // Rounds interleave the phases, so a slow spell of the machine hits one
    // run of a phase rather than every run of it.
    let (mut postgres_alone, mut rabbitmq_alone, mut together) = (vec![], vec![], vec![]);
    for (round, (pg, pg_both)) in pg_alone_dbs.iter().zip(&pg_both_dbs).enumerate() {
        let log = |what: String, run: &FloorPhase| {
            let rate = run.payments_per_s;
            eprintln!("[floor] round {}/{REPEATS}: {what} {rate:.0}/s", round + 1);
        };
        let run = timed(clk, payments, pg.run(payments, pg_in_flight)).await?;
        log(format!("PostgreSQL alone ({pg_in_flight} in flight)"), &run);
        postgres_alone.push(run);
        let run = timed(clk, payments, mq.run(payments, mq_in_flight, consumers)).await?;
        log(format!("RabbitMQ alone ({mq_in_flight} in flight)"), &run);
        rabbitmq_alone.push(run);
        let both = async {
            let (a, b) = tokio::join!(
                pg_both.run(payments, pg_in_flight),
                mq.run(payments, mq_in_flight, consumers)
            );
            a.and(b)
        };
        let run = timed(clk, payments, both).await?;
        log("both at once".into(), &run);
        together.push(run);
    }

    for db in pg_alone_dbs.into_iter().chain(pg_both_dbs) {
        db.teardown(env, cleanup).await?;
    }
    mq.teardown(env, cleanup).await?;

    Ok(FloorResult {
        payments,
        pool_size: env.api_db_connections,
        consumers,
        prefetch: env.effective_concurrency,
        probe,
        sweep,
        postgres_in_flight: pg_in_flight,
        rabbitmq_in_flight: mq_in_flight,
        warmup,
        floor_payments_per_s: best_rate(&together),
        lower_of_separate_payments_per_s: best_rate(&postgres_alone)
            .min(best_rate(&rabbitmq_alone)),
        postgres_alone,
        rabbitmq_alone,
        together,
        pgbench,
    })
}

/// pgbench transactions per client at least, in the sweep: each client is
/// a new backend that prepares its statements and warms its caches first,
/// which a handful of transactions would not amortise (the services' pools
/// are warm).
const PGBENCH_MIN_PER_CLIENT: u64 = 100;

/// The pgbench line: the script checked against `common::db`, a sweep over
/// `levels` clients, then `REPEATS` timed runs at the best level, each on a
/// fresh, warmed database. Returns it with the sweep's rate per level.
async fn pgbench_floor(
    env: &Env,
    cleanup: &Cleanup,
    clk: ClockTicks,
    payments: u64,
    probe: u64,
    levels: &[usize],
    max_in_flight: usize,
) -> anyhow::Result<(PgbenchFloor, std::collections::BTreeMap<usize, f64>)> {
    let mut sweep = std::collections::BTreeMap::new();
    let pgbench = match Pgbench::find(&env.logs_dir).await {
        Ok(pgbench) => pgbench,
        Err(err) => {
            eprintln!("[floor] no pgbench line: {err:#}");
            let floor = PgbenchFloor {
                not_measured: Some(format!("{err:#}")),
                ..PgbenchFloor::default()
            };
            return Ok((floor, sweep));
        }
    };
    eprintln!("[floor] {} at {}", pgbench.version, pgbench.path.display());
    // Small pools: these databases' own connections only count rows and
    // delete outbox rows; pgbench brings its own.
    let db = PgFloor::setup_with(env, cleanup, "floor_pgbench_sweep", 2).await?;
    // The script must still write what `common::db` writes: one payment
    // each way, compared (see the `pgbench` module).
    let ours = db.one(None).await?;
    db.pgbench(&pgbench, 1, 1, false).await?;
    crate::pgbench::check_same_writes(&db.pool, ours.0)
        .await
        .context("checking the pgbench script against common::db")?;
    db.pgbench(&pgbench, probe, max_in_flight, true).await?;
    analyze(&db.pool).await?;
    for &level in levels {
        let n = probe.max(PGBENCH_MIN_PER_CLIENT * level as u64);
        let rate = db.pgbench(&pgbench, n, level, true).await?.rate();
        eprintln!("  {level} clients: pgbench {rate:.0} payments/s");
        sweep.insert(level, rate);
    }
    db.teardown(env, cleanup).await?;
    let in_flight = best_level(sweep.iter().map(|(l, r)| (*l, *r)), max_in_flight);

    let mut runs = Vec::with_capacity(REPEATS);
    for round in 1..=REPEATS {
        let db = PgFloor::setup_with(env, cleanup, &format!("floor_pgbench{round}"), 2).await?;
        db.pgbench(&pgbench, probe, in_flight, true).await?;
        analyze(&db.pool).await?;
        let before = pgbench_snapshot();
        let run = db.pgbench(&pgbench, payments, in_flight, true).await?;
        let cpu = before.usage_until(&pgbench_snapshot(), clk);
        eprintln!(
            "[floor] pgbench alone, run {round}/{REPEATS} ({in_flight} clients): {:.0} payments/s",
            run.rate()
        );
        runs.push(FloorPhase {
            seconds: run.seconds,
            payments_per_s: run.rate(),
            cpu,
        });
        db.teardown(env, cleanup).await?;
    }
    let floor = PgbenchFloor {
        version: Some(pgbench.version.clone()),
        not_measured: None,
        in_flight,
        best_payments_per_s: best_rate(&runs),
        runs,
    };
    Ok((floor, sweep))
}

/// CPU counters with pgbench's share: the bench's children that exited
/// (pgbench is the only one while it runs).
fn pgbench_snapshot() -> CpuSnapshot {
    let mut snapshot = CpuSnapshot::take();
    snapshot.add("pgbench", crate::procstat::own_children_ticks());
    snapshot
}

/// `VACUUM ANALYZE` of a database just warmed up, so every timed run starts
/// from statistics of the tables as they are, not from whatever state they
/// were in when autovacuum last visited a database created seconds ago.
/// Without it, now and then a timed run was several times slower, PostgreSQL
/// burning five to eight times the CPU per payment until autovacuum came by.
pub async fn analyze(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("VACUUM ANALYZE")
        .execute(pool)
        .await
        .context("VACUUM ANALYZE after the warm-up")?;
    Ok(())
}

/// Runs `work` (`n` payments) as one timed floor run.
async fn timed(
    clk: ClockTicks,
    n: u64,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<FloorPhase> {
    let before = CpuSnapshot::take();
    let started = Instant::now();
    work.await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(FloorPhase {
        seconds,
        payments_per_s: n as f64 / seconds,
        cpu: before.usage_until(&CpuSnapshot::take(), clk),
    })
}

/// Runs `make()` `n` times, each in its own task (as the services handle
/// each request or message in its own task, spread over the runtime's
/// threads), at most `in_flight` at once; the first error wins.
async fn spawn_bounded<F, Fut>(n: u64, in_flight: usize, mut make: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let permit = limit.clone().acquire_owned().await?;
        let work = make();
        tasks.spawn(async move {
            let result = work.await;
            drop(permit);
            result
        });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let joined = joined.context("a floor task panicked").and_then(|r| r);
        result = result.and(joined);
    }
    result
}

/// A floor database, and what one payment's writes need (shared by its
/// tasks through an `Arc`).
struct PgFloor {
    name: String,
    url: String,
    pool: PgPool,
    merchant_id: uuid::Uuid,
    card: CardDetails,
    response: ProcessorResponse,
}

impl PgFloor {
    async fn setup(env: &Env, cleanup: &Cleanup, name: &str) -> anyhow::Result<Arc<Self>> {
        Self::setup_with(env, cleanup, name, env.api_db_connections).await
    }

    async fn setup_with(
        env: &Env,
        cleanup: &Cleanup,
        name: &str,
        pool_size: u32,
    ) -> anyhow::Result<Arc<Self>> {
        let name = env.scenario_name(name);
        cleanup.register(&name);
        // The same pool settings as the services (`common::db::connect`).
        let url = env.database_url(&name);
        let pool = common::db::connect(&DatabaseArgs {
            database_url: url.clone(),
            database_max_connections: pool_size,
        })
        .await?;
        common::db::migrate(&pool).await?;
        let merchant_id = api_keys::ensure_merchant(&pool, api_keys::DEFAULT_MERCHANT).await?;
        // What a worker stores for an approved `tok_visa` charge.
        let card = CardDetails {
            last4: "4242".into(),
            brand: "visa".into(),
            exp_month: 12,
            exp_year: 2030,
            fingerprint: "fp_4242424242424242".into(),
            country: "US".into(),
            funding: "credit".into(),
        };
        let response = ProcessorResponse {
            approved: Some(true),
            authorization_code: Some("A1B2C3".into()),
            avs_result: Some("Y".into()),
            cvv_result: Some("M".into()),
            network_transaction_id: Some("ntx_0123456789abcdef".into()),
            processor: Some("processor-sim".into()),
            risk_score: Some(12),
            decline_code: None,
            charge_id: Some("ch_0123456789abcdef0123456789abcdef".into()),
        };
        Ok(Arc::new(Self {
            name,
            url,
            pool,
            merchant_id,
            card,
            response,
        }))
    }

    async fn run(self: &Arc<Self>, n: u64, in_flight: usize) -> anyhow::Result<()> {
        let (tx, mut rx) = mpsc::unbounded_channel::<i64>();
        let pool = self.pool.clone();
        let deleter = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(DELETE_BATCH);
            while rx.recv_many(&mut batch, DELETE_BATCH).await > 0 {
                outbox::delete(&pool, &batch).await?;
                batch.clear();
            }
            Ok::<_, sqlx::Error>(())
        });
        let result = spawn_bounded(n, in_flight, || {
            let work = self.clone();
            let tx = tx.clone();
            async move { work.one(Some(&tx)).await.map(drop) }
        })
        .await;
        drop(tx);
        deleter
            .await
            .context("outbox deleter panicked")?
            .context("deleting outbox rows")?;
        result.context("PostgreSQL floor")?;
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        if left != 0 {
            bail!("PostgreSQL floor left {left} outbox rows");
        }
        Ok(())
    }

    /// The same writes by pgbench (see the `pgbench` module).
    async fn pgbench(
        &self,
        pgbench: &Pgbench,
        n: u64,
        clients: usize,
        delete_outbox: bool,
    ) -> anyhow::Result<crate::pgbench::PgbenchRun> {
        let card = serde_json::to_string(&self.card)?;
        let response = serde_json::to_string(&self.response)?;
        let bindings = Bindings {
            merchant: self.merchant_id,
            card: &card,
            response: &response,
            actor: ACTOR,
            relay_after_secs: RELAY_AFTER.as_secs_f64(),
            lease_secs: LEASE.as_secs_f64(),
        };
        pgbench
            .run(&self.url, &self.pool, &bindings, n, clients, delete_outbox)
            .await
            .context("pgbench floor")
    }

    async fn teardown(self: Arc<Self>, env: &Env, cleanup: &Cleanup) -> anyhow::Result<()> {
        self.pool.close().await;
        crate::system::drop_database(env, &self.name).await?;
        cleanup.forget(&self.name);
        Ok(())
    }

    fn new_payment(&self) -> anyhow::Result<NewPayment> {
        Ok(NewPayment {
            id: PaymentId::new(),
            merchant_id: self.merchant_id,
            amount: Amount::parse(15000)?,
            currency: Currency::parse("USD")?,
            capture: true,
            card_token: CardToken::parse("tok_visa")?,
            order_id: Some("order_123456".into()),
            invoice_id: None,
            customer_id: Some("cust_abc123".into()),
            customer_email: None,
            customer_name: None,
            description: Some("Payment for Order #123456".into()),
            statement_descriptor: None,
            billing_address: None,
            metadata: json!({}),
            // As the API does for a request without `Prefer: wait`.
            notify_on_finish: false,
            origin: Default::default(),
        })
    }

    /// One payment's writes; its outbox row goes to `deleter` (none: it
    /// stays).
    async fn one(&self, deleter: Option<&mpsc::UnboundedSender<i64>>) -> anyhow::Result<PaymentId> {
        let new = self.new_payment()?;
        let mut tx = self.pool.begin().await?;
        let inserted = payments::insert(&mut tx, &new, RELAY_AFTER).await?;
        tx.commit().await?;
        // The API hands confirmed rows to a batching deleter in the same way.
        if let Some(deleter) = deleter {
            let _ = deleter.send(inserted.outbox_id);
        }
        let actor = ACTOR;
        // One payment per statement: the floor is the work of one payment
        // at a time (a worker batches the payments it holds).
        let claimed = payments::claim_many(
            &self.pool,
            &[new.id],
            LEASE,
            LEASE,
            Audit {
                actor,
                reason: "claimed",
            },
        )
        .await?
        .pop()
        .context("claim found the payment not claimable")?;
        let approval = payments::Approval {
            id: new.id,
            attempt: claimed.attempts,
            captured: true,
            card: self.card.clone(),
            processor_response: self.response.clone(),
            reason: "processor approved",
        };
        payments::succeed_many(&self.pool, &[approval], actor)
            .await?
            .pop()
            .context("succeed found the claim gone")?;
        Ok(new.id)
    }
}

struct MqFloor {
    name: String,
    broker: Arc<Broker>,
    prefetch: u16,
}

impl MqFloor {
    async fn setup(env: &Env, cleanup: &Cleanup, name: &str) -> anyhow::Result<Self> {
        let name = env.scenario_name(name);
        cleanup.register(&name);
        // Declares the same topology as the API (exchange, quorum main
        // queue, dead-letter queue).
        let broker = Broker::connect(env.amqp_url.clone(), Topology::new(name.clone())).await?;
        Ok(Self {
            name,
            broker: Arc::new(broker),
            prefetch: u16::try_from(env.effective_concurrency)
                .context("WORKER_CONCURRENCY must fit a prefetch (at most 65535)")?,
        })
    }

    async fn run(&self, n: u64, in_flight: usize, consumers: usize) -> anyhow::Result<()> {
        // Acks sent just before the previous run's channels closed can be
        // lost, and the broker then requeues those messages; they must not
        // count here (with a large prefetch there are a few every run).
        self.broker
            .open_channel()
            .await?
            .queue_purge(
                &self.broker.topology().process_queue(),
                QueuePurgeOptions { nowait: false },
            )
            .await
            .context("purging the floor queue")?;
        let acked = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let mut tasks = Vec::with_capacity(consumers);
        for i in 0..consumers {
            let channel = self.broker.open_channel().await?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions::default())
                .await
                .context("setting the prefetch")?;
            let mut consumer = channel
                .basic_consume(
                    &self.broker.topology().process_queue(),
                    &format!("bench-floor-{i}"),
                    // Manual acks, as the workers.
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .context("starting a consumer")?;
            let acked = acked.clone();
            let stop_tx = stop_tx.clone();
            let mut stop_rx = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        _ = stop_rx.changed() => break,
                        next = consumer.next() => next,
                    };
                    let delivery = match next {
                        Some(Ok(delivery)) => delivery,
                        Some(Err(err)) => return Err(anyhow::Error::new(err).context("consuming")),
                        None => break,
                    };
                    // The worker decodes every message before acting on it.
                    Job::from_bytes(&delivery.data).context("an undecodable message")?;
                    delivery
                        .ack(BasicAckOptions::default())
                        .await
                        .context("acking")?;
                    if acked.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                        let _ = stop_tx.send(true);
                        break;
                    }
                }
                let _ = channel.close(200, "floor done").await;
                Ok(())
            }));
        }

        let merchant = uuid::Uuid::new_v4();
        let published = spawn_bounded(n, in_flight, || {
            let broker = self.broker.clone();
            async move {
                let job = Job::process_payment(PaymentId::new(), merchant);
                broker
                    .publish_job(&job)
                    .await
                    .context("RabbitMQ floor publish")
            }
        })
        .await;
        if let Err(err) = published {
            let _ = stop_tx.send(true);
            return Err(err);
        }
        for task in tasks {
            task.await.context("a floor consumer panicked")??;
        }
        let got = acked.load(Ordering::SeqCst);
        if got != n {
            bail!("RabbitMQ floor consumed {got} of {n} messages");
        }
        Ok(())
    }

    async fn teardown(self, env: &Env, cleanup: &Cleanup) -> anyhow::Result<()> {
        self.broker.close().await;
        crate::system::delete_queues(env, &self.name).await?;
        cleanup.forget(&self.name);
        Ok(())
    }
}
