//! The operator console (issue 23, DESIGN.md section 14): HTML pages at
//! `/console` for the operator on call, served by the API itself.
//!
//! - Who may use it: an operator key signs in ([`session`]); the session is
//!   a cookie (`HttpOnly`, `SameSite=Strict`, `Secure` when
//!   `PUBLIC_BASE_URL` is https) that ends after `CONSOLE_SESSION_TTL`, or
//!   at sign-out, or when its key is revoked. Every form carries the
//!   session's CSRF token, compared in constant time before anything is
//!   done. A merchant key is refused, saying so.
//! - What it shows ([`pages`]): the overview (payments by status, the last
//!   hour as SVG charts drawn here in [`charts`], every queue's depth, the
//!   workers), what needs attention, the dead letters, the dead webhook
//!   deliveries, a payment's whole story, the audit log.
//! - What it does: every read and every action is one of the operator
//!   API's functions ([`super::admin`], [`super::dead_deliveries`],
//!   [`super::payment_story`]), the same
//!   code as the JSON endpoints, so an action from the browser writes the
//!   same `operator_audit` row as one from a script. The console reads no
//!   table of its own, except its sessions.
//! - How it looks after itself: server-rendered HTML (`maud` escapes every
//!   value), one style sheet and one small script of our own
//!   (`static/`), no third-party front-end code. Every page works without
//!   JavaScript; the script only refreshes the live parts of a page
//!   (`data-live` regions) by fetching their fragment every few seconds.
//!   Every answer carries a strict Content-Security-Policy (scripts and
//!   styles from this origin only, no inline script, no framing).
//!
//! Errors are pages, not the API's JSON envelope: an operator in a browser
//! reads them. Internal causes are logged, never shown (as everywhere).

mod charts;
mod html;
mod pages;
mod session;
mod sign_in;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// The console's routes. Not in the OpenAPI document (they answer HTML to
/// a browser) and not behind the per-key rate limit (no API key: a session
/// cookie), so `routes.rs` merges them as a group of their own.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .route("/console", get(pages::overview::page))
        .route("/console/live/overview", get(pages::overview::live))
        .route("/console/attention", get(pages::attention::page))
        .route("/console/live/attention", get(pages::attention::live))
        .route("/console/dead-letters", get(pages::dead_letters::page))
        .route("/console/live/dead-letters", get(pages::dead_letters::live))
        .route(
            "/console/dead-letters/replay",
            post(pages::dead_letters::replay),
        )
        .route(
            "/console/dead-letters/purge",
            get(pages::dead_letters::confirm_purge).post(pages::dead_letters::purge),
        )
        .route("/console/webhooks", get(pages::webhooks::page))
        .route("/console/live/webhooks", get(pages::webhooks::live))
        .route(
            "/console/webhooks/redeliver",
            post(pages::webhooks::redeliver),
        )
        .route("/console/payments", get(pages::payment::search))
        .route("/console/payments/{id}", get(pages::payment::page))
        .route("/console/audit", get(pages::audit::page))
        .route(
            "/console/sign-in",
            get(sign_in::sign_in_page).post(sign_in::sign_in),
        )
        .route("/console/sign-out", post(sign_in::sign_out))
        .route("/console/static/console.js", get(script))
        .route("/console/static/console.css", get(style_sheet))
        .layer(axum::middleware::map_response(security_headers))
}

/// Scripts, styles, images and fetches from this origin only; no inline
/// script, no plugin, no base, forms posting only here, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
base-uri 'none'; frame-ancestors 'none'";

/// What every console answer carries: the policy above, no framing (the
/// header older browsers read), no content sniffing, no referrer (ids in
/// URLs stay here), and no caching of pages that show every merchant's data.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The live-refresh script (see `static/console.js`).
async fn script() -> Response {
    static_file(
        include_str!("static/console.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn style_sheet() -> Response {
    static_file(
        include_str!("static/console.css"),
        "text/css; charset=utf-8",
    )
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated on every load, so a new version is never stale.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
