//! The worker's Prometheus metrics (served at `/metrics` on `METRICS_BIND`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    finished: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    processor_calls: Family<OutcomeLabel, Histogram>,
    retries: Counter,
    dead_letters: Counter,
    pub in_flight: Gauge,
    pub queue_depth: Family<QueueLabel, Gauge>,
    held: Counter,
    deferred: Counter,
    /// Payments (of every worker) whose outcome is unknown, and the age of
    /// the oldest, read by the rescuer's pass.
    pub unknown_outcomes: Gauge,
    pub oldest_unknown_outcome_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    webhook_deliveries: Family<OutcomeLabel, Counter>,
    webhook_latency: Histogram,
    webhook_endpoints_disabled: Counter,
    /// Broker connections opened after a lost one (both of this process's
    /// connections), brought up to date at scrape time.
    pub broker_reconnections: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("payments_worker");
        let finished = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "payments_finished",
            "Payments this worker brought to a terminal state, by outcome",
            finished.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "payment_latency_seconds",
            "Time from acceptance by the API to a terminal state",
            latency.clone(),
        );
        let processor_calls = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "processor_call_seconds",
            "Duration of card processor calls (including in-process retries), by outcome",
            processor_calls.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "retries",
            "Transient failures that scheduled a retry",
            retries.clone(),
        );
        let dead_letters = Counter::default();
        registry.register(
            "dead_letters",
            "Jobs published to the dead-letter queue",
            dead_letters.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Messages being processed right now",
            in_flight.clone(),
        );
        let queue_depth = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Messages ready in each queue, read at scrape time",
            queue_depth.clone(),
        );
        let held = Counter::default();
        registry.register(
            "jobs_held",
            "Jobs held for an operator because the processor refused our request itself \
             (misconfiguration: wrong PROCESSOR_URL, bad credentials)",
            held.clone(),
        );
        let deferred = Counter::default();
        registry.register(
            "jobs_deferred",
            "Messages that met a live claim of another worker and were deferred",
            deferred.clone(),
        );
        let unknown_outcomes = Gauge::default();
        registry.register(
            "outcome_unknown_payments",
            "Payments whose latest processor call has an unknown outcome, being reconciled",
            unknown_outcomes.clone(),
        );
        let oldest_unknown_outcome_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "oldest_unknown_outcome_seconds",
            "Age of the oldest unknown outcome (0 when there is none)",
            oldest_unknown_outcome_seconds.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, failed, gone, timeout, \
             connection_error, blocked)",
            webhook_deliveries.clone(),
        );
        let webhook_latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "webhook_delivery_seconds",
            "Duration of one webhook delivery attempt",
            webhook_latency.clone(),
        );
        let webhook_endpoints_disabled = Counter::default();
        registry.register(
            "webhook_endpoints_disabled",
            "Webhook endpoints disabled because they answered 410 Gone",
            webhook_endpoints_disabled.clone(),
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
            webhook_deliveries,
            webhook_latency,
            webhook_endpoints_disabled,
            held,
            deferred,
            unknown_outcomes,
            oldest_unknown_outcome_seconds,
            finished,
            latency,
            processor_calls,
            retries,
            dead_letters,
            in_flight,
            queue_depth,
        }
    }
}

impl Metrics {
    pub fn finished(&self, outcome: &'static str, accepted_at: DateTime<Utc>) {
        self.finished.get_or_create(&OutcomeLabel { outcome }).inc();
        let elapsed = (Utc::now() - accepted_at).to_std().unwrap_or_default();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// `outcome` is [`crate::processor::Outcome::label`].
    pub fn processor_call(&self, outcome: &'static str, took: Duration) {
        self.processor_calls
            .get_or_create(&OutcomeLabel { outcome })
            .observe(took.as_secs_f64());
    }

    pub fn retried(&self) {
        self.retries.inc();
    }

    pub fn held(&self) {
        self.held.inc();
    }

    pub fn deferred(&self) {
        self.deferred.inc();
    }

    pub fn dead_lettered(&self) {
        self.dead_letters.inc();
    }

    pub fn webhook_attempt(&self, outcome: &'static str, took: Duration) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.webhook_latency.observe(took.as_secs_f64());
    }

    pub fn webhook_endpoint_disabled(&self) {
        self.webhook_endpoints_disabled.inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
