//! Load generation against `POST /v1/payments`.
//!
//! Two shapes:
//! - [`open_loop`]: requests on a fixed timeline (request `i` is due at
//!   `start + i / rate`), each spawned at its slot whether or not earlier
//!   ones have answered, and timed from the slot, not from when it was
//!   actually sent. A slow server therefore cannot slow the generator down
//!   and hide its own slowness (coordinated omission): time a request spent
//!   waiting behind a late generator counts against the server.
//! - [`submit_bounded`]: as fast as the API takes them with at most `n` in
//!   flight (closed loop), for the end-to-end runs where throughput, not
//!   accept latency, is measured.
//!
//! The client speaks HTTP/1.1, one request per connection at a time, and
//! opens as many connections as there are requests in flight (no pool cap);
//! the in-flight cap of [`MAX_IN_FLIGHT`] only guards the file descriptor
//! limit should the server stall completely, and anything it stops is
//! counted as an error.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant as StdInstant;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// Longest a request may take before it counts as a timeout error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight at most (see the module doc).
pub const MAX_IN_FLIGHT: usize = 8_000;

/// The seed request of `seeds/000` (the shape `testkit::payment_body` uses),
/// with the test token that approves.
pub fn payment_body() -> Arc<str> {
    serde_json::json!({
        "amount": 15000,
        "currency": "USD",
        "payment_method": {"type": "card", "card": {"token": "tok_visa"}},
        "order_id": "order_123456",
        "customer_id": "cust_abc123",
        "description": "Payment for Order #123456",
        "capture": true
    })
    .to_string()
    .into()
}

/// Where and as whom to post: to each API process in turn.
#[derive(Debug, Clone)]
pub struct Target {
    urls: Arc<[String]>,
    next: Arc<AtomicUsize>,
    pub key: String,
    pub body: Arc<str>,
}

impl Target {
    pub fn new(api_urls: &[String], key: &str) -> Self {
        Self {
            urls: api_urls
                .iter()
                .map(|url| format!("{url}/v1/payments"))
                .collect(),
            next: Arc::default(),
            key: key.to_owned(),
            body: payment_body(),
        }
    }

    /// The next API's `/v1/payments`.
    fn url(&self) -> &str {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.urls[turn % self.urls.len()]
    }
}

pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        // Keep every connection the run opened; the default would already
        // allow it, said here so nobody lowers it by accident.
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?)
}

/// One request, read to the end (so its connection can be reused): `Ok` for
/// `202 Accepted`, else the kind of failure.
async fn post(client: &reqwest::Client, target: &Target) -> Result<(), String> {
    let response = client
        .post(target.url())
        .bearer_auth(&target.key)
        .header(CONTENT_TYPE, "application/json")
        .body(target.body.to_string())
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let status = response.status();
    response.bytes().await.map_err(|e| classify(&e))?;
    if status == StatusCode::ACCEPTED {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

fn classify(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timeout".into()
    } else if err.is_connect() {
        "connect error".into()
    } else {
        "transport error".into()
    }
}

/// What one open-loop step saw.
#[derive(Debug, Default)]
pub struct OpenLoopOutcome {
    pub scheduled: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Latency from the intended send time of every `202`, in ms.
    pub ok_latencies_ms: Vec<f64>,
    /// From the first slot to the last answer.
    pub elapsed: Duration,
    /// How late the generator spawned requests relative to their slots.
    pub spawn_lag_mean_ms: f64,
    pub spawn_lag_max_ms: f64,
    pub max_in_flight: usize,
}

/// Offers `rate` requests per second for `duration` (see the module doc).
///
/// The timeline is kept by a dedicated OS thread sleeping with
/// `std::thread::sleep` (tens of microseconds of slack) rather than by
/// tokio's timer, which rounds every deadline up to the next millisecond and
/// would add most of a millisecond to every measured latency. The thread
/// spawns each request onto the runtime at its slot; answers come back over
/// a channel.
pub async fn open_loop(
    client: &reqwest::Client,
    target: &Target,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<OpenLoopOutcome> {
    // Rates and durations are small positive numbers: no truncation.
    let scheduled = (rate * duration.as_secs_f64()).round() as u64;
    let runtime = tokio::runtime::Handle::current();
    let (tx, mut rx) = mpsc::unbounded_channel::<Answer>();
    let client = client.clone();
    let target = target.clone();
    let start = StdInstant::now() + Duration::from_millis(20);
    let scheduler = std::thread::Builder::new()
        .name("open-loop".into())
        .spawn(move || {
            let cap = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            let mut timeline = Timeline::default();
            for i in 0..scheduled {
                let slot = start + Duration::from_secs_f64(i as f64 / rate);
                let now = StdInstant::now();
                if slot > now {
                    std::thread::sleep(slot - now);
                }
                let lag = StdInstant::now().saturating_duration_since(slot);
                timeline.lag_sum += lag;
                timeline.lag_max = timeline.lag_max.max(lag);
                let Ok(permit) = cap.clone().try_acquire_owned() else {
                    timeline.not_sent += 1;
                    continue;
                };
                timeline.max_in_flight = timeline
                    .max_in_flight
                    .max(MAX_IN_FLIGHT - cap.available_permits());
                let client = client.clone();
                let target = target.clone();
                let tx = tx.clone();
                runtime.spawn(async move {
                    let result = post(&client, &target).await;
                    drop(permit);
                    let _ = tx.send((slot, StdInstant::now(), result));
                });
            }
            timeline
        })
        .context("starting the open-loop scheduler thread")?;

    let mut outcome = OpenLoopOutcome {
        scheduled,
        ok_latencies_ms: Vec::with_capacity(usize::try_from(scheduled).unwrap_or(0)),
        ..OpenLoopOutcome::default()
    };
    let mut last_done = start;
    // Ends when the scheduler and every request have dropped their sender.
    while let Some((slot, done, result)) = rx.recv().await {
        last_done = last_done.max(done);
        match result {
            Ok(()) => {
                outcome.ok += 1;
                outcome
                    .ok_latencies_ms
                    .push(done.saturating_duration_since(slot).as_secs_f64() * 1000.0);
            }
            Err(kind) => *outcome.errors.entry(kind).or_default() += 1,
        }
    }
    let timeline = tokio::task::spawn_blocking(move || scheduler.join())
        .await
        .context("joining the open-loop scheduler")?
        .map_err(|_| anyhow::anyhow!("the open-loop scheduler panicked"))?;
    if timeline.not_sent > 0 {
        outcome
            .errors
            .insert("not sent: in-flight cap".into(), timeline.not_sent);
    }
    Ok(OpenLoopOutcome {
        elapsed: last_done.saturating_duration_since(start),
        spawn_lag_mean_ms: timeline.lag_sum.as_secs_f64() * 1000.0 / scheduled.max(1) as f64,
        spawn_lag_max_ms: timeline.lag_max.as_secs_f64() * 1000.0,
        max_in_flight: timeline.max_in_flight,
        ..outcome
    })
}

/// A request's slot, when its answer arrived, and what it was.
type Answer = (StdInstant, StdInstant, Result<(), String>);

/// What the scheduler thread saw of its own timeliness.
#[derive(Debug, Default)]
struct Timeline {
    lag_sum: Duration,
    lag_max: Duration,
    not_sent: u64,
    max_in_flight: usize,
}

/// What a closed-loop submission saw.
#[derive(Debug, Clone, Default)]
pub struct SubmitOutcome {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

/// Posts `n` payments with at most `concurrency` in flight.
pub async fn submit_bounded(
    client: reqwest::Client,
    target: Target,
    n: u64,
    concurrency: usize,
) -> SubmitOutcome {
    let started = Instant::now();
    let mut outcome = SubmitOutcome::default();
    let mut answers = futures_util::stream::iter(0..n)
        .map(|_| post(&client, &target))
        .buffer_unordered(concurrency.max(1));
    while let Some(answer) = answers.next().await {
        match answer {
            Ok(()) => outcome.ok += 1,
            Err(kind) => *outcome.errors.entry(kind).or_default() += 1,
        }
    }
    SubmitOutcome {
        elapsed: started.elapsed(),
        ..outcome
    }
}
