//! One unit of background work, driven by the test instead of a loop: a
//! worker step (one message), a rescuer pass, a relay pass. Start the test
//! system with no worker ([`crate::Options::api_only`]) or stop the API
//! first, so that nothing else does the same work meanwhile.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::TestApp;

impl TestApp {
    /// What a worker of this test would run its steps with: the test's
    /// pool, a broker with the retry tiers, the worker settings (processor
    /// URL filled in). No loop runs on it.
    pub async fn worker_context(&self) -> worker::Context {
        worker::Context::new(
            self.pool.clone(),
            Arc::new(self.broker().await),
            self.worker_settings(),
            CancellationToken::new(),
        )
        .expect("a worker context")
    }

    /// Takes the next message of the payments' queue and runs one worker
    /// step on it.
    pub async fn run_one_step(&self, ctx: &worker::Context) {
        let (body, headers) = self.take_message("process").await;
        worker::jobs::handle(ctx, &body, headers.as_ref())
            .await
            .expect("the step finishes");
    }

    /// One pass of the API's outbox relay; how many messages it published.
    pub async fn relay_outbox_once(&self) -> usize {
        let broker = self.broker().await;
        let published = api::state::outbox::relay_once(&self.pool, &broker)
            .await
            .expect("an outbox relay pass");
        broker.close().await;
        published
    }

    /// One pass of the API's event relay; how many events it dispatched.
    pub async fn relay_events_once(&self) -> usize {
        let broker = common::queue::Broker::connect(
            self.broker_url(),
            common::queue::Topology::webhooks(&self.prefix),
        )
        .await
        .expect("broker");
        let dispatched = api::webhooks::relay_once(&self.pool, &broker, &self.api_url)
            .await
            .expect("an event relay pass");
        broker.close().await;
        dispatched
    }
}
