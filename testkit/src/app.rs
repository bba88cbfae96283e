//! [`TestApp`]: one test's whole system (a database, a queue prefix, the
//! simulator, the API and workers in-process), started, restarted, stopped,
//! and removed when dropped.

use std::sync::Arc;
use std::time::Duration;

use common::config::{BrokerArgs, DatabaseArgs};
use common::queue::{Broker, Topology};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::teardown::{self, Leftovers, Service};
use crate::{amqp_url, host_port, pg_server, Options, Proxy};

/// One test's whole system. Dropping it stops its services and removes its
/// database and queues, also when the test panics (see [`crate::teardown`]).
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
    /// Set once `cleanup` removed everything, so `Drop` has nothing to do.
    cleaned: bool,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::with(Options::default()).await
    }

    /// The API and the simulator, no worker ([`Options::api_only`]).
    pub async fn api_only() -> Self {
        Self::with(Options::api_only()).await
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
            name: "simulator",
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

        let (_, key) = api::keys::create_key(
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
            cleaned: false,
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
            None => self.broker_url(),
        }
    }

    /// The `AMQP_URL` of this test's processes: [`Options::amqp_url`], or
    /// the machine's broker.
    pub fn broker_url(&self) -> String {
        self.options.amqp_url.clone().unwrap_or_else(amqp_url)
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
            secrets_key: self.options.worker.secrets_key.clone(),
            event_retention_days: 30,
            console: api::config::ConsoleArgs {
                retry_delays: self.options.worker.retry_delays.clone(),
                webhook_retry_delays: self.options.worker.webhook_retry_delays.clone(),
                rescue_after: self.options.worker.rescue_after,
                worker_dead_after: self.options.worker.dead_after,
                session_ttl: Duration::from_secs(3600),
            },
        };
        let stop = CancellationToken::new();
        let handle = tokio::spawn(api::serve(
            listener,
            pool,
            Arc::new(broker),
            settings,
            stop.clone(),
        ));
        self.api = Some(Service {
            name: "API",
            stop,
            handle,
        });
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
        self.workers.push(Service {
            name: "worker",
            stop,
            handle,
        });
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
            .env("AMQP_URL", self.broker_url())
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
            .env(
                "PROCESSOR",
                match settings.processor {
                    worker::ProcessorKind::Sim => "sim",
                    worker::ProcessorKind::Stripe => "stripe",
                },
            )
            .env("STRIPE_API_BASE", &settings.stripe.stripe_api_base)
            .env("SECRETS_KEY", crate::TEST_SECRETS_KEY)
            .env("METRICS_BIND", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(key) = &settings.stripe.stripe_secret_key {
            cmd.env("STRIPE_SECRET_KEY", key.expose());
        }
        cmd
    }

    /// A command that runs the `api` binary at `bin` on `port` against this
    /// test's database and prefix, its broker at `amqp_url`. Killed when
    /// dropped.
    pub fn api_command(&self, bin: &str, amqp_url: &str, port: u16) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("AMQP_URL", amqp_url)
            .env("QUEUE_PREFIX", &self.prefix)
            .env("API_BIND", format!("127.0.0.1:{port}"))
            .env("PUBLIC_BASE_URL", format!("http://127.0.0.1:{port}"))
            .env("SECRETS_KEY", crate::TEST_SECRETS_KEY)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        cmd
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
            amqp_url: self.broker_url(),
            queue_prefix: self.prefix.clone(),
        };
        config.settings = self.worker_settings();
        config
    }

    /// What this test leaves in PostgreSQL and RabbitMQ: its database, and
    /// the payments' and the webhooks' topologies with their retry tiers.
    pub fn leftovers(&self) -> Leftovers {
        let worker = &self.options.worker;
        Leftovers {
            db_name: self.db_name.clone(),
            topologies: vec![
                Topology::new(&self.prefix).with_retry_delays(&worker.retry_delays),
                Topology::webhooks(&self.prefix).with_retry_delays(&worker.webhook_retry_delays),
            ],
        }
    }

    /// Stops every service gracefully (asserting each stops cleanly) and
    /// deletes the database and queues. Optional: dropping the app does the
    /// same; this is for a test that wants everything stopped at a point of
    /// its own (e.g. to read the logs of a finished run).
    pub async fn cleanup(mut self) {
        self.stop_workers().await;
        self.stop_api().await;
        if let Some(sim) = self.sim.take() {
            let _ = sim.stop().await;
        }
        self.pool.close().await;
        if let Err(err) = self.leftovers().remove().await {
            eprintln!(
                "testkit: could not remove everything of {}: {err:#}",
                self.db_name
            );
        }
        self.cleaned = true;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        let mut services: Vec<Service> = self.workers.drain(..).collect();
        services.extend(self.api.take());
        services.extend(self.sim.take());
        // A graceful stop needs the services' tasks to go on running while
        // this thread waits: only a multi-thread runtime does that.
        let runtime_runs_on = matches!(
            tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
            Ok(tokio::runtime::RuntimeFlavor::MultiThread)
        );
        let panicking = std::thread::panicking();
        let failures = teardown::on_drop(services, self.leftovers(), runtime_runs_on);
        // What `cleanup` asserted, asserted here too; never a panic inside
        // a panic (that aborts the whole test binary).
        if !failures.is_empty() && !panicking {
            panic!("{}", failures.join("; "));
        }
    }
}
