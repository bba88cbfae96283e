//! Shared core of the payment processor: domain types, database access, queue
//! messages and topology, the card processor's protocol, webhooks, dead
//! letters, configuration and telemetry.
//!
//! Error policy: domain checks return [`domain::DomainError`]; database
//! functions return `sqlx::Error`, which callers classify with
//! [`db::is_unavailable`], [`db::is_transient`] and [`db::violated_constraint`]
//! (the API answers 503, the worker waits, a named constraint becomes a
//! precise 4xx); plumbing returns `anyhow::Result` with `.context(..)` so the
//! chain says what was being done.

pub mod cli;
pub mod config;
pub mod db;
pub mod dead_letters;
pub mod domain;
pub mod health;
pub mod processor;
pub mod queue;
pub mod retry;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod webhooks;
