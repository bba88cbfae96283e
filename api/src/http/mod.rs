//! The edge of the API, importing no resource: the error envelope, request
//! reading and its limits, request ids and the outermost layer, extractors, authentication,
//! idempotency keys, rate limits, waiting (`Prefer: wait`) and pages.

pub mod auth;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod layers;
pub mod page;
pub mod params;
pub mod rate_limit;
pub mod request;
pub mod request_id;
pub mod wait;
