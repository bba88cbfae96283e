//! The worker proves it is alive: a heartbeat row in PostgreSQL, written
//! every fifth of `WORKER_DEAD_AFTER`. A claim whose worker's heartbeat is
//! older than that is void, so a killed worker's payments are claimed again
//! by a live worker within seconds (DESIGN.md section 12).
//!
//! It runs until told to stop, not until shutdown: a draining worker keeps
//! beating while it finishes its in-flight payments.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::context::Context;

pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let every = ctx.settings.dead_after / 5;
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match common::db::workers::heartbeat(&ctx.heartbeat_pool, &ctx.worker_id).await {
            Ok(()) if failing => {
                tracing::info!("heartbeat written again");
                failing = false;
            }
            Ok(()) => {}
            Err(err) if !failing => {
                // Other workers may now take over our claims; the attempt
                // counter fences our late writes, and the processor's
                // idempotency key rules out a second charge.
                tracing::warn!(error = %err, "cannot write the heartbeat");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
