//! [`LocalStripe`]: a `localstripe` server (PyPI, a fake, stateful Stripe
//! that nobody here wrote) of one test's own, on a free port, stopped when
//! dropped. `.ci/run` installs it; `LOCALSTRIPE` names the program
//! (default `/opt/localstripe/bin/localstripe`).
//!
//! Also what a test asks it directly: PaymentMethods made from test card
//! numbers, and the PaymentIntents and refunds it holds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

/// Where `.ci/run` installs localstripe.
pub const DEFAULT_BIN: &str = "/opt/localstripe/bin/localstripe";

/// The secret key tests give the worker: localstripe takes any `sk_…`.
pub const TEST_KEY: &str = "sk_test_localstripe";

/// A running localstripe, killed on drop.
pub struct LocalStripe {
    addr: SocketAddr,
    child: tokio::process::Child,
    http: reqwest::Client,
}

impl LocalStripe {
    /// Starts localstripe on a free port and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = std::env::var("LOCALSTRIPE").unwrap_or_else(|_| DEFAULT_BIN.into());
        let port = crate::free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = tokio::process::Command::new(&bin)
            .arg("--port")
            .arg(port.to_string())
            // Never the state another run left on disk.
            .arg("--from-scratch")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {bin} (install it: .ci/run, or set LOCALSTRIPE)"))?;
        let mut server = Self {
            addr,
            child,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("localstripe exited at start: {status}");
            }
            if server.get("/v1/payment_intents?limit=1").await.is_ok() {
                return Ok(server);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "localstripe did not answer on {addr} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET path` with the test key; the JSON of a `2xx`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url()))
            .bearer_auth(TEST_KEY)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status} {body}");
        Ok(body)
    }

    /// A PaymentMethod (`pm_…`) for a test card number.
    pub async fn payment_method(&self, number: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!("{}/v1/payment_methods", self.url()))
            .bearer_auth(TEST_KEY)
            .form(&[
                ("type", "card"),
                ("card[number]", number),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "123"),
            ])
            .send()
            .await?;
        let body: Value = response.json().await?;
        body["id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no PaymentMethod: {body}"))
    }

    /// Every object of a list (localstripe lists oldest first), following
    /// `has_more`.
    pub async fn list(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{path}{separator}limit=100");
            if let Some(after) = &after {
                url.push_str(&format!("&starting_after={after}"));
            }
            let page = self.get(&url).await?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            after = data
                .last()
                .and_then(|o| o["id"].as_str())
                .map(str::to_owned);
            all.extend(data);
            if page["has_more"] != Value::Bool(true) || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// The PaymentIntents whose `metadata[payment_id]` is `payment_id`.
    pub async fn payment_intents_of(&self, payment_id: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .list("/v1/payment_intents")
            .await?
            .into_iter()
            .filter(|pi| pi["metadata"]["payment_id"] == payment_id)
            .collect())
    }

    /// The refunds of a PaymentIntent that we made (they carry
    /// `metadata[operation_id]`; localstripe's own record of a partial
    /// capture's released rest does not).
    pub async fn refunds_of(&self, payment_intent: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .list(&format!("/v1/refunds?payment_intent={payment_intent}"))
            .await?
            .into_iter()
            .filter(|r| r["metadata"]["operation_id"].is_string())
            .collect())
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
