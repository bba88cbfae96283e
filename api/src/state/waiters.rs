//! Wakes requests waiting with `Prefer: wait=N` when their payment finishes.
//!
//! One `LISTEN payment_finished` connection per API process (the database
//! trigger sends the payment id) fans out to the waiting requests; no request
//! polls. If the listening connection drops, every waiter is woken to re-read
//! its payment, so a lost notification costs a re-read, not a missed answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const CHANNEL: &str = "payment_finished";

#[derive(Debug, Default)]
pub struct Waiters {
    map: Mutex<HashMap<Uuid, Weak<Notify>>>,
}

impl Waiters {
    /// A handle woken when `id` finishes. Keep it while waiting.
    pub fn subscribe(&self, id: Uuid) -> Arc<Notify> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(&id).and_then(Weak::upgrade) {
            return existing;
        }
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let notify = Arc::new(Notify::new());
        map.insert(id, Arc::downgrade(&notify));
        notify
    }

    fn wake(&self, id: Uuid) {
        let notify = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&id).and_then(|w| w.upgrade())
        };
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        let all: Vec<_> = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().filter_map(|(_, w)| w.upgrade()).collect()
        };
        for notify in all {
            notify.notify_waiters();
        }
    }

    /// Listens until shutdown, reconnecting after database outages.
    pub async fn listen(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for finished payments; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if let Err(err) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %err, "LISTEN failed; retrying");
                continue;
            }
            backoff = Duration::from_millis(100);
            // Anything that finished while we were not listening.
            self.wake_all();
            loop {
                let received = tokio::select! {
                    () = shutdown.cancelled() => return,
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(notification)) => {
                        if let Ok(id) = notification.payload().parse::<Uuid>() {
                            self.wake(id);
                        }
                    }
                    // Connection lost; `try_recv` reconnects on the next call.
                    Ok(None) => self.wake_all(),
                    Err(err) => {
                        tracing::warn!(error = %err, "listening for finished payments failed");
                        self.wake_all();
                        break;
                    }
                }
            }
        }
    }
}
