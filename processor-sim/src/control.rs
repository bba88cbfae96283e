//! The simulator's own control plane under `/_sim`: fault injection, the
//! counters the tests trust, and a reset between runs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::processor::{Faults, FaultsUpdate, SimStats};

use crate::error::SimError;
use crate::state::Sim;

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/stats", get(get_stats))
        .route("/_sim/reset", post(reset))
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Json<Faults> {
    Json(sim.faults())
}

/// Applies a partial update; fields left out keep their value. The whole
/// update is validated before anything changes.
async fn put_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Json<Faults>, SimError> {
    let update: FaultsUpdate =
        serde_json::from_slice(&body).map_err(|e| SimError::invalid_json(&e))?;
    let mut faults = sim.faults();
    if let Some(rate) = update.error_rate {
        faults.error_rate = rate_in_range("error_rate", rate)?;
    }
    if let Some(rate) = update.timeout_rate {
        faults.timeout_rate = rate_in_range("timeout_rate", rate)?;
    }
    if let Some(latency_ms) = update.latency_ms {
        faults.latency_ms = latency_ms;
    }
    if let Some(outage) = update.outage {
        faults.outage = outage;
    }
    sim.set_faults(faults.clone());
    tracing::info!(?faults, "faults updated");
    Ok(Json(faults))
}

fn rate_in_range(field: &str, rate: f64) -> Result<f64, SimError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(SimError::invalid_request(format!(
            "{field} must be between 0 and 1, got {rate}"
        )))
    }
}

async fn get_stats(State(sim): State<Arc<Sim>>) -> Json<SimStats> {
    Json(sim.stats())
}

async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.reset();
    tracing::info!("simulator reset");
    StatusCode::NO_CONTENT
}
