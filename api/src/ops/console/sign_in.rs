//! Signing in and out of the console.
//!
//! Sign-in takes an operator key (pasted into a form, never put in a URL).
//! It is looked up as the API looks up any key; a merchant key is refused
//! with a message that says so, an unknown or revoked key with another.
//! Both refusals are audited (with no key id: no operator acted). Attempts
//! are bounded for the whole process (`crate::state::limiter::SignIns`).
//! The form, which has no session yet, is a double submit: a random value
//! in the cookie [`SIGN_IN_COOKIE`] and in the form must agree (so no other
//! page can sign an operator in under a key of its choosing).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::db;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::html;
use super::session::{
    cookie, field, set_cookie, Session, CSRF_FIELD, SESSION_COOKIE, SIGN_IN_COOKIE,
};
use crate::keys::hash_secret;
use crate::ops::admin;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct SignInQuery {
    signed_out: Option<String>,
}

/// `GET /console/sign-in`: the form, with a fresh double-submit value.
pub(crate) async fn sign_in_page(
    State(state): State<AppState>,
    Query(query): Query<SignInQuery>,
) -> Response {
    let notice = query.signed_out.is_some().then_some("You are signed out.");
    sign_in_form(&state, StatusCode::OK, notice, None)
}

fn sign_in_form(
    state: &AppState,
    status: StatusCode,
    notice: Option<&str>,
    refusal: Option<&str>,
) -> Response {
    let nonce = common::secret::random("", &URL_SAFE_NO_PAD);
    let body = html! {
        div class="narrow" {
            h1 { "Operator console: sign in" }
            @if let Some(notice) = notice {
                p class="notice" role="status" { (notice) }
            }
            @if let Some(refusal) = refusal {
                p class="error" role="alert" id="sign-in-error" { (refusal) }
            }
            form method="post" action="/console/sign-in" {
                input type="hidden" name=(CSRF_FIELD) value=(nonce);
                label for="key" { "Operator key" }
                p class="hint" id="key-hint" {
                    "An operator key (" code { "api keys create-operator" } "). Merchant keys cannot sign in."
                }
                input id="key" name="key" type="password" autocomplete="off" required
                    aria-describedby="key-hint" aria-invalid=[refusal.map(|_| "true")];
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut response = html::document(status, "Sign in", None, body);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SIGN_IN_COOKIE, &nonce, Duration::from_secs(3600)),
    );
    response
}

/// `POST /console/sign-in`.
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    let sent = field(&form, CSRF_FIELD).unwrap_or_default();
    if expected.is_empty() || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return sign_in_form(
            &state,
            StatusCode::FORBIDDEN,
            None,
            Some("This sign-in form has expired or did not come from this console. Try again."),
        );
    }
    if let Err(wait) = state.sign_ins.check() {
        tracing::warn!(
            wait_secs = wait,
            "console sign-in attempts over the limit; refused"
        );
        let mut response = sign_in_form(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            None,
            Some(&format!(
                "Too many sign-in attempts on this console. Try again in {wait} s."
            )),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return response;
    }
    let secret = field(&form, "key").unwrap_or_default().trim();
    let key = if secret.is_empty() || secret.len() > 200 {
        None
    } else {
        match db::api_keys::find_by_hash(&state.pool, &hash_secret(secret)).await {
            Ok(key) => key,
            Err(err) => return html::failure(err.into(), None),
        }
    };
    let key = match key {
        None => {
            admin::audit(
                &state,
                None,
                "console.sign_in",
                "console",
                "refused: unknown or revoked key",
            )
            .await;
            return sign_in_form(
                &state,
                StatusCode::UNAUTHORIZED,
                None,
                Some("This key is not valid, or it has been revoked."),
            );
        }
        Some(key) if key.merchant_id.is_some() => {
            admin::audit(
                &state,
                None,
                "console.sign_in",
                "console",
                "refused: a merchant key",
            )
            .await;
            return sign_in_form(
                &state,
                StatusCode::FORBIDDEN,
                None,
                Some(
                    "This is a merchant key. The console is for operators only: sign in with \
                     an operator key (made with `api keys create-operator`).",
                ),
            );
        }
        Some(key) => key,
    };
    let token = common::secret::random("cs_", &URL_SAFE_NO_PAD);
    let csrf = common::secret::random("", &URL_SAFE_NO_PAD);
    let ttl = state.settings.console.session_ttl;
    let expires_at = chrono::Utc::now()
        + chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::hours(8));
    if let Err(err) =
        db::console_sessions::create(&state.pool, &hash_secret(&token), key.id, &csrf, expires_at)
            .await
    {
        return html::failure(err.into(), None);
    }
    admin::audit(
        &state,
        Some(key.id),
        "console.sign_in",
        "console",
        "signed in",
    )
    .await;
    tracing::info!(key_id = %key.id, "operator signed in to the console");
    let mut response = Redirect::to("/console").into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &token, ttl),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(&state, SIGN_IN_COOKIE, "", Duration::ZERO),
    );
    response
}

/// `POST /console/sign-out`: the session row is deleted, the cookie
/// removed.
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = html::csrf_refusal(&session, &form) {
        return refused;
    }
    if let Err(err) = db::console_sessions::delete(&state.pool, &session.token_hash).await {
        return html::failure(err.into(), Some(&session));
    }
    admin::audit(
        &state,
        Some(session.key_id),
        "console.sign_out",
        "console",
        "signed out",
    )
    .await;
    let mut response = Redirect::to("/console/sign-in?signed_out=1").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", Duration::ZERO),
    );
    response
}
