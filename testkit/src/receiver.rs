//! A real HTTP receiver of webhooks for tests: it records every request
//! (headers and body) and answers as scripted, so a test can verify each
//! request with the `standardwebhooks` crate and cause failures for real
//! (error answers, a hang, being down).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::TestApp;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn id(&self) -> String {
        header(&self.headers, "webhook-id")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn kind(&self) -> String {
        self.json()["type"].as_str().expect("type").to_owned()
    }

    pub fn object_id(&self) -> String {
        self.json()["data"]["object"]["id"]
            .as_str()
            .expect("object id")
            .to_owned()
    }

    /// Verified with the Standard Webhooks library and `secret`.
    pub fn verifies_with(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret)
            .expect("a valid secret")
            .verify(&self.body, &self.headers)
            .is_ok()
    }
}

pub fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[derive(Default)]
pub struct ReceiverState {
    pub got: Mutex<Vec<Received>>,
    /// Statuses to answer, in order; 200 once empty.
    pub script: Mutex<VecDeque<u16>>,
    /// How long to wait before answering the next request.
    pub hang: Mutex<Option<Duration>>,
}

/// A real HTTP receiver on loopback.
pub struct Receiver {
    pub addr: SocketAddr,
    pub state: Arc<ReceiverState>,
    stop: CancellationToken,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(state.clone());
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        Self { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    pub fn answer(&self, statuses: &[u16]) {
        self.state
            .script
            .lock()
            .expect("lock")
            .extend(statuses.iter().copied());
    }

    pub fn got(&self) -> Vec<Received> {
        self.state.got.lock().expect("lock").clone()
    }

    /// Waits until `check` holds for what arrived.
    pub async fn wait_for(
        &self,
        app: &TestApp,
        what: &str,
        check: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        app.eventually(what, Duration::from_secs(45), || async {
            let got = self.got();
            check(&got).then_some(got)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    state
        .got
        .lock()
        .expect("lock")
        .push(Received { headers, body });
    let hang = state.hang.lock().expect("lock").take();
    if let Some(hang) = hang {
        tokio::time::sleep(hang).await;
    }
    let status = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(200);
    StatusCode::from_u16(status).expect("a status")
}
