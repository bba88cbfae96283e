//! A request's id: made by the outermost layer ([`super::layers`]) and
//! kept in a task-local for the request's life, so the error envelope and
//! the answers after a commit can quote it without threading it through
//! every handler.
//!
//! The id is generated (a client-supplied one is not trusted: it would let
//! a caller forge log lines), `req_` and a random UUID.

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
}

pub const HEADER: &str = "request-id";

/// The current request's id, inside a request.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A new request id.
pub fn new_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

/// Runs `request` with `id` as its [`current_request_id`].
pub async fn scope<F: Future>(id: String, request: F) -> F::Output {
    REQUEST_ID.scope(id, request).await
}
