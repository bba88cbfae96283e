//! Shared core of the payment processor: domain types, database access, queue
//! messages and topology, the card processor's protocol, configuration and
//! telemetry.
//!
//! Error policy: functions whose callers branch on the failure return a
//! `thiserror` enum ([`domain::DomainError`], [`db::DbError`]); plumbing returns
//! `anyhow::Result` with `.context(..)` so the chain says what was being done.

pub mod config;
pub mod db;
pub mod dead_letters;
pub mod domain;
pub mod health;
pub mod processor;
pub mod queue;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
pub mod webhooks;
