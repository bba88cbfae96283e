//! The operators' side: the operator API (`admin`: dead letters, the audit
//! log, the overview and needs-attention views; `dead_deliveries`: webhook
//! deliveries given up on, and sending them again; `payment_story`: one
//! payment of any merchant), health probes and metrics (`health`), the
//! OpenAPI document (`document`), and the
//! browser console built on the operator API (`console`).

pub mod admin;
pub mod console;
pub mod dead_deliveries;
pub mod document;
pub mod health;
pub mod payment_story;
