//! What an answer after a commit needs: waiting for a change
//! (`Prefer: wait`), and the error that says a commit may or may not have
//! happened.

use std::time::Duration;

use crate::http::error::ApiError;
use crate::state::AppState;

/// A failure while the payment's commit was under way: the database may or
/// may not have committed it, and the answer says exactly that. With an
/// `Idempotency-Key` a retry is safe (it replays the payment if it exists);
/// any other error (a constraint, a bug) still means nothing was written.
pub(crate) fn outcome_unknown(err: sqlx::Error) -> ApiError {
    if common::db::is_unavailable(&err) {
        ApiError::unavailable(
            "payment_outcome_unknown",
            "The connection to the database was lost while the request was being saved: it may \
             or may not have been accepted. Retrying with the same Idempotency-Key is safe and \
             returns what was accepted; without an Idempotency-Key, check before retrying.",
            err.into(),
        )
    } else {
        err.into()
    }
}

/// Holds a request until `done(read())` or `wait` passes, then answers with
/// the last read. Woken by the database's notification for `id` (payments
/// and operations share the channel); re-reads after every wake-up. No
/// polling.
pub(crate) async fn wait_until<T, F, Fut>(
    state: &AppState,
    id: uuid::Uuid,
    wait: Duration,
    done: impl Fn(&T) -> bool,
    mut read: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notify = state.waiters.subscribe(id);
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before the read, so a notification between the read
        // and the wait is not lost.
        notified.as_mut().enable();
        let current = read().await?;
        if done(&current) {
            return Ok(current);
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(deadline) => return Ok(current),
            () = state.shutdown.cancelled() => return Ok(current),
        }
    }
}
