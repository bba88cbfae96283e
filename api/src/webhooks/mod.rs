//! Webhooks (DESIGN.md §10): endpoints, events, and the relay that gets
//! events on their way.
//!
//! Events are written by database triggers in the transaction of the status
//! change they report (migration `webhooks`), each with a snapshot of the
//! rows at that moment. This module renders a snapshot with the very
//! functions `GET` uses ([`Payment::from_row`], [`Refund::from_row`]), so an
//! event's `data.object` is the object as `GET` showed it then. The relay
//! renders each new event once, stores the body (every retry sends the same
//! bytes) and publishes its deliveries to the webhook queue; the worker
//! signs and sends them. A relay that misses a publish loses nothing: the
//! worker's rescuer publishes deliveries that are late.
//!
//! Creating an endpoint takes no `Idempotency-Key`: its answer carries the
//! secret, which we will not keep in an idempotency record, and a duplicate
//! endpoint is harmless and can be deleted.

mod attempts;
mod endpoints;
mod events;
mod relay;

use endpoints::find_endpoint;
pub(crate) use events::send_again;
pub use events::{render, Event, MAX_EVENT_BYTES};
use relay::publish;
pub use relay::{pruner, relay, relay_once};

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .merge(endpoints::routes())
        .merge(attempts::routes())
        .merge(events::routes())
}
