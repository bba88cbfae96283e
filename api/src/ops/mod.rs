//! The operators' side: the dead-letter and audit API (`admin`), health
//! probes and metrics (`health`), and the console's settings.

pub mod admin;
pub mod console;
pub mod health;
