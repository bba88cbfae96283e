//! Why a step could not finish (the message is then not acked): what the
//! engine, the batches and the consumer all answer with.

use common::queue::PublishError;

/// Why a step could not finish. The message is not acked.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Shutdown came while waiting for the database: leave the message to be
    /// redelivered.
    #[error("shut down before the step finished")]
    Interrupted,
    /// A dead letter could not be published; the payment was left as it was.
    #[error(transparent)]
    Broker(#[from] PublishError),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}
