//! A card-processor simulator over real HTTP.
//!
//! The worker talks to a card gateway it does not control; this service stands
//! in for that gateway so every path of the payment processor (approval, each
//! decline, transient errors, outages, timeouts with an unknown outcome,
//! idempotent retries) can be exercised locally and in tests, without mocks.
//!
//! - `POST /v1/charges` charges a test token ([`cards`] lists them). The
//!   `Idempotency-Key` header makes it idempotent: a repeated key gets the
//!   first stored answer, never a second charge.
//! - `POST /v1/charges/:id/capture` and `POST /v1/charges/:id/void` capture
//!   or release an authorization ([`authorizations`]); `POST /v1/refunds`
//!   refunds a captured charge, never beyond what it captured ([`refunds`]).
//!   Each is idempotent by key like a charge and sees the same faults.
//! - A `GET` at each of those paths with `?idempotency_key=<key>` looks up
//!   what happened to an operation whose answer the client lost: the stored
//!   answer, or `404` `operation_not_found` if the processor never took the
//!   key ([`idempotency`]).
//! - `PUT`/`GET /_sim/faults` inject latency, `500`s, `503` outages and
//!   answers delayed past the client's timeout.
//! - `GET /_sim/stats` counts charges and, above all, `duplicate_charges`:
//!   payments charged more than once, which the end-to-end tests require to
//!   stay 0, and likewise `duplicate_refunds` and `over_refunds`.
//!   `POST /_sim/reset` starts a fresh run.
//!
//! Error policy: handlers answer with [`error::SimError`], a JSON envelope
//! `{"error":{"code","message"}}`; plumbing (binding, serving) returns
//! `anyhow::Result` with context.

mod authorizations;
mod book;
mod cards;
mod charges;
mod control;
mod error;
mod faults;
mod idempotency;
mod refunds;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use common::telemetry::LogArgs;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::Sim;

/// Settings of the `processor-sim` binary; each flag has an environment
/// variable so it runs the same way from a shell, compose or CI.
#[derive(Debug, clap::Parser)]
#[command(name = "processor-sim", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SIM_BIND", default_value = "127.0.0.1:8090")]
    pub bind: SocketAddr,

    #[command(flatten)]
    pub log: LogArgs,
}

/// The simulator's routes with fresh state. Answers delayed by the timeout
/// fault then last their full delay, because nothing tells them the service is
/// stopping; [`serve`] uses [`router_with_shutdown`] so they end promptly.
pub fn router() -> Router {
    router_with_shutdown(CancellationToken::new())
}

/// The simulator's routes with fresh state; cancelling `shutdown` cuts short
/// the long delays of the timeout fault so a graceful shutdown does not wait
/// for them.
pub fn router_with_shutdown(shutdown: CancellationToken) -> Router {
    let sim = Arc::new(Sim::new(shutdown));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(charges::router())
        .merge(authorizations::router())
        .merge(refunds::router())
        .merge(control::router())
        .with_state(sim)
}

/// Serves the simulator on `listener` until `shutdown` is cancelled, then
/// finishes in-flight requests and returns. Taking the listener from the
/// caller lets tests bind port 0.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    tracing::info!(%addr, "processor simulator listening");
    let app = router_with_shutdown(shutdown.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the processor simulator")?;
    tracing::info!("processor simulator stopped");
    Ok(())
}
