//! Test helpers: every test gets its own database and queue prefix, the
//! services started in-process on port 0 (or as real processes where a test
//! kills them), and TCP proxies to cut a connection for that test alone.
//!
//! Tests talk to the real PostgreSQL and RabbitMQ of the machine; nothing is
//! mocked. The card processor is `processor-sim` over real HTTP.

pub mod proxy;
pub mod receiver;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use common::config::{BrokerArgs, DatabaseArgs};
use common::processor::SimStats;
use common::queue::{Broker, Topology};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use proxy::Proxy;

/// The machine's PostgreSQL server (override with `TEST_PG_URL`).
pub fn pg_server() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The machine's RabbitMQ (override with `TEST_AMQP_URL`).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn host_port(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = if hostport.contains(':') {
        hostport.to_owned()
    } else if url.starts_with("amqp") {
        format!("{hostport}:5672")
    } else {
        format!("{hostport}:5432")
    };
    addr.parse()
        .with_context(|| format!("{addr} is not host:port"))
}

/// Worker settings that make tests fast: short timeouts, leases and delays;
/// payments in flight as a worker's default, so the fault tests exercise it.
pub fn fast_worker_settings() -> worker::Settings {
    worker::Settings {
        processor_url: String::new(),
        processor_name: "processor-sim".into(),
        concurrency: worker::DEFAULT_CONCURRENCY,
        max_attempts: 4,
        retry_delays: worker::DelayList(vec![
            Duration::from_millis(200),
            Duration::from_millis(400),
        ]),
        processor_timeout: Duration::from_millis(1000),
        lease: Duration::from_secs(5),
        dead_after: Duration::from_secs(2),
        authorization_ttl_hours: 168,
        rescue_interval: Duration::from_millis(500),
        rescue_after: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(10),
        webhook_concurrency: 16,
        webhook_retry_delays: worker::DelayList(vec![
            Duration::from_millis(300),
            Duration::from_millis(600),
        ]),
        webhook_timeout: Duration::from_millis(2000),
        // Test receivers listen on loopback.
        webhook_allow_private: true,
        metrics_bind: "127.0.0.1:0".into(),
    }
}

/// How to start a test system.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers started in-process at once.
    pub workers: usize,
    pub worker: worker::Settings,
    /// Route the API's database connections through a [`Proxy`].
    pub api_db_proxy: bool,
    /// Route the API's broker connection through a [`Proxy`].
    pub api_amqp_proxy: bool,
    /// Route in-process workers' database connections through a [`Proxy`].
    pub worker_db_proxy: bool,
    /// Route in-process workers' broker connections through a [`Proxy`].
    pub worker_amqp_proxy: bool,
    /// Start the API at all.
    pub api: bool,
    /// The API's `REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
    /// The API's `RATE_LIMIT_PER_SECOND` and `RATE_LIMIT_BURST`. By default
    /// the highest allowed, so no test but the rate-limit one is limited
    /// (several send hundreds of requests at once with one key).
    pub rate_limit_per_second: NonZeroU32,
    pub rate_limit_burst: NonZeroU32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 1,
            worker: fast_worker_settings(),
            api_db_proxy: false,
            api_amqp_proxy: false,
            worker_db_proxy: false,
            worker_amqp_proxy: false,
            api: true,
            request_timeout: Duration::from_secs(40),
            rate_limit_per_second: NO_RATE_LIMIT,
            rate_limit_burst: NO_RATE_LIMIT,
        }
    }
}

/// The highest rate limit the API accepts, a million requests per second
/// and at once: no test reaches it.
pub const NO_RATE_LIMIT: NonZeroU32 = match NonZeroU32::new(api::rate_limit::MAX_RATE) {
    Some(rate) => rate,
    None => panic!("MAX_RATE is not zero"),
};

struct Service {
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.handle.await.context("service task panicked")?
    }
}

/// One test's whole system.
pub struct TestApp {
    pub pool: PgPool,
    pub db_name: String,
    pub database_url: String,
    pub prefix: String,
    pub api_url: String,
    pub sim_url: String,
    pub http: reqwest::Client,
    /// A key of the default merchant with every merchant scope.
    pub key: String,
    pub options: Options,
    pub db_proxy: Option<Proxy>,
    pub amqp_proxy: Option<Proxy>,
    pub worker_db_proxy: Option<Proxy>,
    pub worker_amqp_proxy: Option<Proxy>,
    sim: Option<Service>,
    api: Option<Service>,
    workers: Vec<Service>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        Self::try_with(options)
            .await
            .expect("starting the test system")
    }

    async fn try_with(options: Options) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("test_{id}");
        let prefix = format!("test_{}", &id[..12]);
        let database_url = format!("{}/{db_name}", pg_server());
        let pool = common::db::connect(&DatabaseArgs {
            database_url: database_url.clone(),
            database_max_connections: 8,
        })
        .await?;
        common::db::migrate(&pool).await?;

        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sim_url = format!("http://{}", sim_listener.local_addr()?);
        let sim_stop = CancellationToken::new();
        let sim = Service {
            stop: sim_stop.clone(),
            handle: tokio::spawn(processor_sim::serve(sim_listener, sim_stop)),
        };

        let pg_addr = host_port(&pg_server())?;
        let amqp_addr = host_port(&amqp_url())?;
        let db_proxy = if options.api_db_proxy {
            Some(Proxy::start(pg_addr).await?)
        } else {
            None
        };
        let amqp_proxy = if options.api_amqp_proxy {
            Some(Proxy::start(amqp_addr).await?)
        } else {
            None
        };
        let worker_db_proxy = if options.worker_db_proxy {
            Some(Proxy::start(pg_addr).await?)
        } else {
            None
        };
        let worker_amqp_proxy = if options.worker_amqp_proxy {
            Some(Proxy::start(amqp_addr).await?)
        } else {
            None
        };

        let (_, key) = api::cli::create_key(
            &pool,
            common::db::api_keys::DEFAULT_MERCHANT,
            "test",
            &[
                "payments:read".into(),
                "payments:write".into(),
                "webhooks:read".into(),
                "webhooks:write".into(),
            ],
        )
        .await?;

        let mut app = Self {
            pool,
            db_name,
            database_url,
            prefix,
            api_url: String::new(),
            sim_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            key,
            options: options.clone(),
            db_proxy,
            amqp_proxy,
            worker_db_proxy,
            worker_amqp_proxy,
            sim: Some(sim),
            api: None,
            workers: Vec::new(),
        };
        if options.api {
            app.start_api().await?;
        }
        for _ in 0..options.workers {
            app.start_worker().await;
        }
        Ok(app)
    }

    /// The database URL a process should use, through `proxy` if given.
    pub fn database_url_via(&self, proxy: Option<&Proxy>) -> String {
        match proxy {
            Some(proxy) => format!("postgres://postgres@{}/{}", proxy.addr(), self.db_name),
            None => self.database_url.clone(),
        }
    }

    /// The AMQP URL a process should use, through `proxy` if given.
    pub fn amqp_url_via(&self, proxy: Option<&Proxy>) -> String {
        match proxy {
            Some(proxy) => format!("amqp://guest:guest@{}/%2f", proxy.addr()),
            None => amqp_url(),
        }
    }

    /// Starts (or restarts) the in-process API.
    pub async fn start_api(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        self.api_url = format!("http://{addr}");
        let database = DatabaseArgs {
            database_url: self.database_url_via(self.db_proxy.as_ref()),
            database_max_connections: 8,
        };
        let pool = common::db::connect_lazy(&database)?;
        let topology = Topology::new(&self.prefix);
        let amqp = self.amqp_url_via(self.amqp_proxy.as_ref());
        let broker = match Broker::connect(&amqp, topology.clone()).await {
            Ok(broker) => broker,
            Err(_) => Broker::lazy(&amqp, topology),
        };
        let settings = api::ServeArgs {
            bind: addr.to_string(),
            public_base_url: self.api_url.clone(),
            relay_after: Duration::from_secs(1),
            relay_interval: Duration::from_millis(200),
            idempotency_ttl_hours: 24,
            request_timeout: self.options.request_timeout,
            shutdown_timeout: Duration::from_secs(5),
            webhook_allow_private: self.options.worker.webhook_allow_private,
            rate_limit_per_second: self.options.rate_limit_per_second,
            rate_limit_burst: self.options.rate_limit_burst,
        };
        let stop = CancellationToken::new();
        let handle = tokio::spawn(api::serve(
            listener,
            pool,
            Arc::new(broker),
            settings,
            stop.clone(),
        ));
        self.api = Some(Service { stop, handle });
        Ok(())
    }

    /// Stops the in-process API (graceful).
    pub async fn stop_api(&mut self) {
        if let Some(api) = self.api.take() {
            api.stop().await.expect("api stopped cleanly");
        }
    }

    /// Worker settings for this test (processor URL filled in).
    pub fn worker_settings(&self) -> worker::Settings {
        let mut settings = self.options.worker.clone();
        settings.processor_url = self.sim_url.clone();
        settings
    }

    /// Starts one more in-process worker.
    pub async fn start_worker(&mut self) {
        let url = self.database_url_via(self.worker_db_proxy.as_ref());
        self.start_worker_on(url).await;
    }

    /// Starts one more in-process worker whose database connections use
    /// `database_url` (this test's database, with options of the test's own,
    /// e.g. a short `lock_timeout`).
    pub async fn start_worker_on(&mut self, database_url: String) {
        let database = DatabaseArgs {
            database_url,
            database_max_connections: worker::DEFAULT_DATABASE_CONNECTIONS,
        };
        let pool = common::db::connect_lazy(&database).expect("worker pool");
        let settings = self.worker_settings();
        settings.validate().expect("valid worker settings");
        let topology = Topology::new(&self.prefix).with_retry_delays(&settings.retry_delays);
        let amqp = self.amqp_url_via(self.worker_amqp_proxy.as_ref());
        let broker = Broker::connect(amqp, topology)
            .await
            .expect("worker connects to the broker");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics");
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker::run(
            pool,
            Arc::new(broker),
            settings,
            listener,
            stop.clone(),
        ));
        self.workers.push(Service { stop, handle });
    }

    /// Stops every in-process worker (graceful).
    pub async fn stop_workers(&mut self) {
        for worker in self.workers.drain(..) {
            worker.stop().await.expect("worker stopped cleanly");
        }
    }

    /// A command that runs the `worker` binary at `bin` against this test's
    /// database, broker prefix and simulator. Killed when dropped.
    pub fn worker_command(&self, bin: &str) -> tokio::process::Command {
        let settings = self.worker_settings();
        settings.validate().expect("valid worker settings");
        let delays: Vec<String> = settings
            .retry_delays
            .iter()
            .map(|d| d.as_secs_f64().to_string())
            .collect();
        let mut cmd = tokio::process::Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("AMQP_URL", amqp_url())
            .env("QUEUE_PREFIX", &self.prefix)
            .env("PROCESSOR_URL", &self.sim_url)
            .env("WORKER_CONCURRENCY", settings.concurrency.to_string())
            .env("MAX_ATTEMPTS", settings.max_attempts.to_string())
            .env("RETRY_DELAYS", delays.join(","))
            .env(
                "PROCESSOR_TIMEOUT_MS",
                settings.processor_timeout.as_millis().to_string(),
            )
            .env("LEASE_SECS", settings.lease.as_secs_f64().to_string())
            .env(
                "AUTHORIZATION_TTL_HOURS",
                settings.authorization_ttl_hours.to_string(),
            )
            .env(
                "WORKER_DEAD_AFTER",
                settings.dead_after.as_secs_f64().to_string(),
            )
            .env(
                "RESCUE_INTERVAL",
                settings.rescue_interval.as_secs_f64().to_string(),
            )
            .env(
                "RESCUE_AFTER",
                settings.rescue_after.as_secs_f64().to_string(),
            )
            .env(
                "SHUTDOWN_TIMEOUT",
                settings.shutdown_timeout.as_secs_f64().to_string(),
            )
            .env(
                "WEBHOOK_CONCURRENCY",
                settings.webhook_concurrency.to_string(),
            )
            .env(
                "WEBHOOK_RETRY_DELAYS",
                settings
                    .webhook_retry_delays
                    .iter()
                    .map(|d| d.as_secs_f64().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .env(
                "WEBHOOK_TIMEOUT_MS",
                settings.webhook_timeout.as_millis().to_string(),
            )
            .env(
                "WEBHOOK_ALLOW_PRIVATE",
                settings.webhook_allow_private.to_string(),
            )
            .env("METRICS_BIND", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    // ---- HTTP helpers ----

    /// Registers a webhook endpoint (`POST /v1/webhook_endpoints`); its id
    /// and secret.
    pub async fn register_webhook(&self, url: &str, events: &[&str]) -> (String, String) {
        let response = self
            .http
            .post(format!("{}/v1/webhook_endpoints", self.api_url))
            .bearer_auth(&self.key)
            .json(&json!({"url": url, "events": events, "description": "test receiver"}))
            .send()
            .await
            .expect("register");
        let status = response.status();
        let endpoint: Value = response.json().await.expect("json");
        assert_eq!(status, 201, "{endpoint}");
        let secret = endpoint["secret"].as_str().expect("secret").to_owned();
        (endpoint["id"].as_str().expect("id").to_owned(), secret)
    }

    /// `POST /v1/payments` with this test's key.
    pub async fn post_payment(&self, body: &Value) -> reqwest::Response {
        self.post_payment_with(body, &[]).await
    }

    /// `POST /v1/payments` with extra headers.
    pub async fn post_payment_with(
        &self,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/payments", self.api_url))
            .bearer_auth(&self.key)
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST /v1/payments")
    }

    /// Creates a payment for `token` and returns its id (asserts 202).
    pub async fn create_payment(&self, token: &str) -> String {
        let response = self.post_payment(&payment_body(token)).await;
        assert_eq!(response.status(), 202, "payment accepted");
        let body: Value = response.json().await.expect("json body");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Creates `n` payments for `token`; returns their ids.
    pub async fn submit(&self, token: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.create_payment(token).await);
        }
        ids
    }

    /// `GET /v1/payments/:id` (asserts 200).
    pub async fn payment(&self, id: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/v1/payments/{id}", self.api_url))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET payment");
        assert_eq!(response.status(), 200, "GET {id}");
        response.json().await.expect("json")
    }

    /// Creates a key with `scopes` for `merchant`.
    pub async fn key_for(&self, merchant: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        api::cli::create_key(&self.pool, merchant, "test", &scopes)
            .await
            .expect("create key")
            .1
    }

    /// Creates an operator key (bound to no merchant; the `/v1/admin`
    /// endpoints only).
    pub async fn operator_key(&self) -> String {
        api::cli::create_operator_key(&self.pool, "test-operator")
            .await
            .expect("create operator key")
            .1
    }

    // ---- database and broker views ----

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
        let broker = Broker::connect(amqp_url(), Topology::new(&self.prefix))
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
            .await
            .expect("queue exists");
        broker.close().await;
        queue.message_count()
    }

    /// A broker handle for this test's prefix (with the workers' retry tiers).
    pub async fn broker(&self) -> Broker {
        let topology =
            Topology::new(&self.prefix).with_retry_delays(&self.options.worker.retry_delays);
        Broker::connect(amqp_url(), topology).await.expect("broker")
    }

    /// Config for running `worker` CLI commands in-process.
    pub fn worker_config(&self, args: &[&str]) -> worker::Config {
        use clap::Parser as _;
        let mut argv = vec!["worker"];
        argv.extend_from_slice(args);
        let mut config = worker::Config::parse_from(argv);
        config.database = DatabaseArgs {
            database_url: self.database_url.clone(),
            database_max_connections: 4,
        };
        config.broker = BrokerArgs {
            amqp_url: amqp_url(),
            queue_prefix: self.prefix.clone(),
        };
        config.settings = self.worker_settings();
        config
    }

    /// Stops everything and deletes the database and queues.
    pub async fn cleanup(mut self) {
        self.stop_workers().await;
        self.stop_api().await;
        if let Some(sim) = self.sim.take() {
            let _ = sim.stop().await;
        }
        if let Ok(broker) = Broker::connect(amqp_url(), Topology::new(&self.prefix)).await {
            let topology =
                Topology::new(&self.prefix).with_retry_delays(&self.options.worker.retry_delays);
            let webhooks = Topology::webhooks(&self.prefix)
                .with_retry_delays(&self.options.worker.webhook_retry_delays);
            if let Ok(channel) = broker.open_channel().await {
                let _ = topology.delete(&channel).await;
                let _ = webhooks.delete(&channel).await;
            }
            broker.close().await;
        }
        self.pool.close().await;
        if let Ok(admin) = PgPool::connect(&format!("{}/postgres", pg_server())).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.db_name
            ))
            .execute(&admin)
            .await;
            admin.close().await;
        }
    }
}

/// The seed request (`seeds/000`) with another card token.
pub fn payment_body(token: &str) -> Value {
    json!({
        "amount": 15000,
        "currency": "USD",
        "payment_method": {"type": "card", "card": {"token": token}},
        "order_id": "order_123456",
        "customer_id": "cust_abc123",
        "description": "Payment for Order #123456",
        "capture": true
    })
}

/// Sends SIGKILL to a child process (no chance to clean up).
pub fn sigkill(child: &tokio::process::Child) {
    signal(child, "KILL");
}

/// Sends SIGTERM to a child process.
pub fn sigterm(child: &tokio::process::Child) {
    signal(child, "TERM");
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("child still running");
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A local port free right now (for a child process that must be told its
/// port in advance).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free local port")
}
