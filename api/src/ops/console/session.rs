//! Signing in and out of the console, the session cookie, and the CSRF
//! check every form goes through.
//!
//! - Sign-in takes an operator key (pasted into a form, never put in a URL).
//!   It is looked up as the API looks up any key; a merchant key is
//!   refused with a message that says so, an unknown or revoked key with
//!   another. Both refusals are audited (with no key id: no operator acted).
//! - The session: a random secret of 256 bits in the cookie
//!   [`SESSION_COOKIE`], only its SHA-256 in `console_sessions`, with the
//!   operator key it belongs to, its CSRF token and its expiry
//!   (`CONSOLE_SESSION_TTL`). Revoking the key ends it (the lookup joins live
//!   operator keys). The cookie is `HttpOnly` (no script reads it),
//!   `SameSite=Strict` (no other site's page sends it), `Path=/console`, and
//!   `Secure` when `PUBLIC_BASE_URL` is https.
//! - CSRF: `SameSite=Strict` already keeps other sites' forms from carrying
//!   the cookie; every form also carries the session's own token, which
//!   [`Session::csrf_refusal`] compares in constant time before the handler
//!   does anything. The sign-in form, which has no session yet, is a
//!   double submit: a random value in the cookie [`SIGN_IN_COOKIE`] and in
//!   the form must agree (so no other page can sign an operator in under a
//!   key of its choosing).

use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::db;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use super::html;
use crate::http::auth::Operator;
use crate::keys::hash_secret;
use crate::ops::admin;
use crate::state::AppState;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "console_session";
/// The sign-in form's double-submit cookie.
const SIGN_IN_COOKIE: &str = "console_sign_in";
/// The form field every console form carries its CSRF token in.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// A signed-in operator.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub key_id: Uuid,
    pub csrf_token: String,
    token_hash: [u8; 32],
}

impl Session {
    /// The operator, as the operator API's functions take it.
    pub fn operator(&self) -> Operator {
        Operator {
            key_id: self.key_id,
        }
    }

    /// The refusal to answer with when `form` does not carry this
    /// session's CSRF token (`None`: it does, go on). Compared in constant
    /// time, so the answer's timing tells nothing of the token. Nothing has
    /// been done when it refuses.
    pub fn csrf_refusal(&self, form: &[(String, String)]) -> Option<Response> {
        let sent = field(form, CSRF_FIELD).unwrap_or_default();
        if bool::from(sent.as_bytes().ct_eq(self.csrf_token.as_bytes())) {
            return None;
        }
        tracing::warn!(key_id = %self.key_id, "console form without its CSRF token refused");
        Some(html::error_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form did not carry this session's security token (it may be from an \
             older session, or from another site). Nothing was changed. Go back, reload \
             the page and try again.",
            Some(self),
        ))
    }
}

/// The first value of `name` in a submitted form.
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A page without a live session goes to the sign-in page.
impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).filter(|t| t.len() <= 200) else {
            return Err(Redirect::to("/console/sign-in").into_response());
        };
        let token_hash = hash_secret(token);
        match db::console_sessions::find(&state.pool, &token_hash).await {
            Ok(Some(row)) => Ok(Session {
                key_id: row.key_id,
                csrf_token: row.csrf_token,
                token_hash,
            }),
            Ok(None) => Err(Redirect::to("/console/sign-in").into_response()),
            Err(err) => Err(html::failure(err.into(), None)),
        }
    }
}

/// A cookie of the console: `HttpOnly`, `SameSite=Strict`, under
/// `/console`, `Secure` behind https; removed when `max_age` is zero.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let secure = state.settings.public_base_url.starts_with("https://");
    // The name is ours and the value base64url: always a valid header.
    HeaderValue::try_from(cookie_line(name, value, max_age, secure))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn cookie_line(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

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
    if let Some(refused) = session.csrf_refusal(&form) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_behind_https() {
        let line = cookie_line(SESSION_COOKIE, "cs_x", Duration::from_secs(60), true);
        assert_eq!(
            line,
            "console_session=cs_x; Path=/console; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        let plain = cookie_line(SESSION_COOKIE, "cs_x", Duration::from_secs(60), false);
        assert!(!plain.contains("Secure"), "{plain}");
    }

    #[test]
    fn a_cookie_is_read_from_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; console_sign_in=n"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("console_session=s"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("s"));
        assert_eq!(cookie(&headers, SIGN_IN_COOKIE), Some("n"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn a_form_without_the_token_or_with_another_is_refused() {
        let session = Session {
            key_id: Uuid::nil(),
            csrf_token: "the-token".into(),
            token_hash: [0; 32],
        };
        let form = |token: &str| vec![(CSRF_FIELD.to_owned(), token.to_owned())];
        assert!(session.csrf_refusal(&form("the-token")).is_none());
        assert!(session.csrf_refusal(&form("the-toke")).is_some());
        assert!(session.csrf_refusal(&form("")).is_some());
        assert!(session.csrf_refusal(&[]).is_some());
    }
}
