//! The API's Prometheus metrics at `/metrics`. Serve it to the scraper only
//! (it has no authentication, like `/healthz`); it shows counts, never data.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(handler))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub accepted: Counter,
    pub idempotent_replays: Counter,
    outbox_backlog: Gauge,
    queue_depth: Family<QueueLabel, Gauge>,
    /// Broker connections opened after a lost one, brought up to date at
    /// scrape time from the brokers' own counts.
    broker_reconnections: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("payments_api");
        let accepted = Counter::default();
        registry.register(
            "payments_accepted",
            "Payments accepted (202)",
            accepted.clone(),
        );
        let idempotent_replays = Counter::default();
        registry.register(
            "idempotent_replays",
            "Requests answered from a stored idempotent response",
            idempotent_replays.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog",
            "Outbox rows not yet published and deleted, read at scrape time",
            outbox_backlog.clone(),
        );
        let queue_depth = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Messages ready in each queue, read at scrape time",
            queue_depth.clone(),
        );
        let broker_reconnections = Counter::default();
        registry.register(
            "broker_reconnections",
            "Broker connections opened after a lost one (possibly to another node)",
            broker_reconnections.clone(),
        );
        Self {
            registry,
            broker_reconnections,
            accepted,
            idempotent_replays,
            outbox_backlog,
            queue_depth,
        }
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Counts, never data; no key, so serve it to the scraper only.",
    responses(
        (status = 200, description = "OpenMetrics text.", body = String, content_type = "application/openmetrics-text")
    ),
    security(())
)]
pub async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    let metrics = &state.metrics;
    if let Ok(backlog) = common::db::outbox::backlog(&state.pool).await {
        metrics.outbox_backlog.set(backlog);
    }
    let reconnections = state.broker.reconnections() + state.webhook_broker.reconnections();
    metrics
        .broker_reconnections
        .inc_by(reconnections.saturating_sub(metrics.broker_reconnections.get()));
    for (queue, depth) in state.broker.queue_depths().await {
        metrics
            .queue_depth
            .get_or_create(&QueueLabel { queue })
            .set(i64::from(depth));
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
}
