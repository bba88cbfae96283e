//! The worker's small HTTP server on `METRICS_BIND`: `/healthz`, `/readyz`,
//! `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::context::Context;
use crate::metrics::QueueLabel;

pub async fn serve(listener: TcpListener, ctx: Arc<Context>) -> anyhow::Result<()> {
    let shutdown = ctx.shutdown.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ctx);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

async fn readyz(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    let (ready, body) = common::health::readiness(&ctx.heartbeat_pool, &ctx.broker).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn metrics(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    refresh_queue_depths(&ctx).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
}

async fn refresh_queue_depths(ctx: &Context) {
    let reconnections = ctx.broker.reconnections() + ctx.webhooks.broker.reconnections();
    let counted = ctx.metrics.broker_reconnections.get();
    ctx.metrics
        .broker_reconnections
        .inc_by(reconnections.saturating_sub(counted));
    for (queue, depth) in ctx.broker.queue_depths().await {
        ctx.metrics
            .queue_depth
            .get_or_create(&QueueLabel { queue })
            .set(i64::from(depth));
    }
}
