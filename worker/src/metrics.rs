//! The worker's Prometheus metrics (served at `/metrics` on `METRICS_BIND`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::processor::Outcome;

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
        Self {
            registry,
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

    pub fn processor_call(&self, outcome: &Outcome, took: Duration) {
        let outcome = match outcome {
            Outcome::Approved(_) => "approved",
            Outcome::Declined(_) => "declined",
            Outcome::Rejected(_) => "rejected",
            Outcome::Transient(_) => "transient",
        };
        self.processor_calls
            .get_or_create(&OutcomeLabel { outcome })
            .observe(took.as_secs_f64());
    }

    pub fn retried(&self) {
        self.retries.inc();
    }

    pub fn dead_lettered(&self) {
        self.dead_letters.inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
