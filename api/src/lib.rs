//! The HTTP API of the payment processor.
//!
//! Accepts card payments, writes each with its outbox row in one
//! transaction, publishes it to RabbitMQ with a publisher confirm, and
//! answers `202 Accepted`; clients poll `GET /v1/payments/:id` or ask to wait
//! with `Prefer: wait=N`. [`serve`] takes its listener and shutdown signal
//! from the caller, so tests start it on port 0.
//!
//! The tree is the map (`docs/ARCHITECTURE.md`): `http/` is the edge
//! (errors, requests, auth, idempotency, rate limits), `state/` what the
//! handlers share, `payments/`, `operations/` (capture, cancel, refund) and
//! `webhooks/` the resources, `ops/` the operators' side (dead letters,
//! health, console); `config.rs`, `server.rs` and `routes.rs` put them
//! together, and `routes.rs` is the only file that lists every resource.

pub mod cli;
pub mod config;
pub mod http;
pub mod keys;
pub mod openapi;
pub mod operations;
pub mod ops;
pub mod payments;
pub mod routes;
pub mod server;
pub mod state;
pub mod webhooks;

pub use cli::Config;
pub use config::{ServeArgs, MAX_IDEMPOTENCY_TTL_HOURS, MAX_REQUEST_TIMEOUT};
pub use server::{connect, serve};
pub use state::AppState;
