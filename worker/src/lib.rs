//! The payment worker: consumes jobs from RabbitMQ, claims each payment with a
//! lease, calls the card processor with the payment id as idempotency key,
//! records the outcome, and acks only after the commit; delivers webhook
//! events on their own queue (`webhooks`). Also the operator's dead-letter
//! tooling (`worker dlq …`). Settings are in `config`, what every step
//! shares in `context`, starting and running the whole in `service`.
//!
//! Scale by starting more processes: they compete for one queue with no
//! coordination beyond the database's guarded updates.

mod batch;
mod charge;
pub mod cli;
mod config;
pub mod consumer;
mod context;
mod deliverer;
pub mod engine;
mod error;
mod heartbeat;
mod http;
pub mod jobs;
pub mod metrics;
pub mod operations;
pub mod processor;
pub mod rescuer;
mod service;
pub mod webhooks;

pub use crate::cli::Config;
pub use crate::config::{
    ProcessorKind, SecretKey, Settings, StripeArgs, DEFAULT_CONCURRENCY,
    DEFAULT_DATABASE_CONNECTIONS, MAX_CONCURRENCY,
};
pub use crate::context::Context;
pub use crate::service::{connect, run};
