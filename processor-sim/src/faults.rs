//! Applying the injected faults to a request, in the one order every endpoint
//! shares: the latency fault (the issuer round-trip), the outage fault
//! (`503`), the error fault (`500`), all before anything is done; and, for
//! operations, the timeout fault after the answer is stored.
//!
//! One place for the order keeps endpoints from drifting apart: a client that
//! handles a charge's faults handles every other call's the same way.

use std::time::Duration;

use common::processor::Faults;
use rand::Rng;

use crate::error::SimError;
use crate::state::Sim;

/// How long the timeout fault holds an answer back: far longer than any
/// sensible client timeout, so the client always gives up first.
const TIMEOUT_DELAY: Duration = Duration::from_secs(30);

/// The faults that strike before acting. `Ok` carries the settings read at
/// the start, so the timeout fault later uses the same snapshot; `Err` is the
/// answer to send instead, nothing having been done.
pub(crate) async fn before_acting(sim: &Sim) -> Result<Faults, SimError> {
    let faults = sim.faults();
    if faults.latency_ms > 0 && !sim.pause(Duration::from_millis(faults.latency_ms)).await {
        // Shutting down: answer like an unavailable gateway, not a made-up result.
        return Err(SimError::unavailable());
    }
    if faults.outage {
        return Err(SimError::unavailable());
    }
    if draw(faults.error_rate) {
        return Err(SimError::internal());
    }
    Ok(faults)
}

/// The timeout fault: after an operation's answer is stored, maybe hold it
/// back until the client gives up, not knowing whether it happened.
pub(crate) async fn maybe_hold_back(sim: &Sim, faults: &Faults) {
    if draw(faults.timeout_rate) {
        tracing::debug!("holding the answer back (timeout fault)");
        sim.pause(TIMEOUT_DELAY).await;
    }
}

/// Whether a fault with probability `rate` fires now. `rate` is within 0..=1
/// (validated on update); 0 never fires and 1 always does.
fn draw(rate: f64) -> bool {
    rate > 0.0 && rand::thread_rng().gen::<f64>() < rate
}
