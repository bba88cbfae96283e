//! Readiness: are the database and the broker reachable? Shared by the
//! API's and the worker's `/readyz`.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::queue::Broker;

/// Whether both dependencies answer, and a body saying which does not and
/// which broker node (`host:port`) this process is connected to.
pub async fn readiness(pool: &PgPool, broker: &Broker) -> (bool, Value) {
    let (database, broker_ready) = tokio::join!(crate::db::is_ready(pool), broker.is_ready());
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let ready = database && broker_ready;
    (
        ready,
        json!({
            "status": word(ready),
            "database": word(database),
            "broker": word(broker_ready),
            "broker_node": broker.node(),
        }),
    )
}
