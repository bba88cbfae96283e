//! Readiness: are the database and the broker reachable? Shared by the
//! API's and the worker's `/readyz`.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::queue::Broker;

/// Whether both dependencies answer, and a body saying which does not.
pub async fn readiness(pool: &PgPool, broker: &Broker) -> (bool, Value) {
    let (database, broker) = tokio::join!(crate::db::is_ready(pool), broker.is_ready());
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let ready = database && broker;
    (
        ready,
        json!({"status": word(ready), "database": word(database), "broker": word(broker)}),
    )
}
