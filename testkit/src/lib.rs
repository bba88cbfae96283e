//! Test helpers: every test gets its own database and queue prefix, the
//! services started in-process on port 0 (or as real processes where a test
//! kills them), and TCP proxies to cut a connection for that test alone.
//!
//! Tests talk to the real PostgreSQL and RabbitMQ of the machine; nothing is
//! mocked. The card processor is `processor-sim` over real HTTP, or for the
//! Stripe adapter a `localstripe` server of the test's own.
//!
//! Where to find what:
//! - [`app`]: [`TestApp`], one test's whole system, started and stopped;
//!   what it made is removed when it is dropped, also when the test panics
//!   ([`teardown`]).
//! - [`http`]: requests to the API as a merchant or an operator, and the
//!   error envelope's check.
//! - [`views`]: what the database, the broker and the simulator hold now,
//!   and waiting for it to change (poll with a deadline, never sleep).
//! - [`steps`]: one worker step, one rescuer pass, one relay pass, driven
//!   by the test without a background loop.
//! - [`cards`]: the simulator's test tokens and what each one does.
//! - [`proxy`], [`receiver`]: a connection to cut (or whose answers to
//!   lose), a webhook receiver.
//! - [`localstripe`]: a fake Stripe of the test's own, for the Stripe
//!   adapter.
//! - [`cluster`]: a three-node RabbitMQ cluster of the test's own.

pub mod app;
pub mod cards;
pub mod cluster;
pub mod http;
pub mod localstripe;
pub mod proxy;
pub mod receiver;
pub mod steps;
pub mod teardown;
pub mod views;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

pub use app::TestApp;
pub use cluster::Cluster;
pub use http::{assert_error, with_field};
pub use localstripe::LocalStripe;
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

pub(crate) fn host_port(url: &str) -> anyhow::Result<SocketAddr> {
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

/// The broker's address (for a [`Proxy`] in front of it).
pub fn amqp_addr() -> SocketAddr {
    host_port(&amqp_url()).expect("TEST_AMQP_URL names host:port")
}

/// Worker settings that make tests fast: short timeouts, leases and delays;
/// payments in flight as a worker's default, so the fault tests exercise it.
/// The `SECRETS_KEY` of every test system (a test's own database holds
/// only its own endpoints).
pub const TEST_SECRETS_KEY: &str = "dGVzdC1rZXktZm9yLXNlYWxpbmctc2VjcmV0cy0zMiE=";

pub fn fast_worker_settings() -> worker::Settings {
    worker::Settings {
        processor: worker::ProcessorKind::Sim,
        stripe: worker::StripeArgs::default(),
        processor_url: String::new(),
        processor_name: "processor-sim".into(),
        concurrency: worker::DEFAULT_CONCURRENCY,
        max_attempts: 4,
        retry_delays: common::queue::RetryTiers::new(vec![
            Duration::from_millis(200),
            Duration::from_millis(400),
        ])
        .expect("retry tiers"),
        processor_timeout: Duration::from_millis(1000),
        lease: Duration::from_secs(5),
        dead_after: Duration::from_secs(2),
        authorization_ttl_hours: 168,
        rescue_interval: Duration::from_millis(500),
        rescue_after: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(10),
        webhook_concurrency: 16,
        webhook_retry_delays: common::queue::RetryTiers::new(vec![
            Duration::from_millis(300),
            Duration::from_millis(600),
        ])
        .expect("webhook retry tiers"),
        webhook_timeout: Duration::from_millis(2000),
        // Test receivers listen on loopback.
        webhook_allow_private: true,
        secrets_key: Some(TEST_SECRETS_KEY.parse().expect("the test key")),
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
    /// The `AMQP_URL` of the API and workers instead of the machine's
    /// broker: a cluster's node list, say (`testkit::cluster`). Queues of
    /// the test left on it are not removed (the cluster's owner removes it).
    pub amqp_url: Option<String>,
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
            amqp_url: None,
        }
    }
}

/// The highest rate limit the API accepts, a million requests per second
/// and at once: no test reaches it.
pub const NO_RATE_LIMIT: NonZeroU32 = match NonZeroU32::new(api::config::MAX_RATE) {
    Some(rate) => rate,
    None => panic!("MAX_RATE is not zero"),
};

impl Options {
    /// The API and the simulator, no worker: nothing changes a payment
    /// after the API wrote it (unless the test starts a worker or drives a
    /// step itself).
    pub fn api_only() -> Self {
        Self {
            workers: 0,
            ..Self::default()
        }
    }

    /// Neither the API nor a worker: a database, a prefix and a simulator,
    /// for tests of the command line or the schema.
    pub fn no_services() -> Self {
        Self {
            api: false,
            workers: 0,
            ..Self::default()
        }
    }

    /// One worker that gives a payment a single attempt: a processor outage
    /// dead-letters it at once.
    pub fn one_attempt() -> Self {
        Self::max_attempts(1)
    }

    /// One worker of [`fast_worker_settings`] but for `MAX_ATTEMPTS`, how
    /// many attempts a payment or operation gets before it is given up.
    pub fn max_attempts(n: i32) -> Self {
        let mut worker = fast_worker_settings();
        worker.max_attempts = n;
        Self {
            worker,
            ..Self::default()
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

/// The seed request with `token`, `amount` and `capture` of the test's own.
pub fn payment_of(token: &str, amount: i64, capture: bool) -> Value {
    let mut body = payment_body(token);
    body["amount"] = json!(amount);
    body["capture"] = json!(capture);
    body
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
