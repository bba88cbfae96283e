//! The console's session: its cookie, how a request finds it, and the
//! CSRF check every form goes through (signing in and out is
//! [`super::sign_in`]).
//!
//! - The session: a random secret of 256 bits in the cookie
//!   [`SESSION_COOKIE`], only its SHA-256 in `console_sessions`, with the
//!   operator key it belongs to, its CSRF token and its expiry
//!   (`CONSOLE_SESSION_TTL`). Revoking the key ends it (the lookup joins live
//!   operator keys). The cookie is `HttpOnly` (no script reads it),
//!   `SameSite=Strict` (no other site's page sends it), `Path=/console`, and
//!   `Secure` when `PUBLIC_BASE_URL` is https.
//! - CSRF: `SameSite=Strict` already keeps other sites' forms from carrying
//!   the cookie; every form also carries the session's own token, which
//!   [`Session::csrf_matches`] compares in constant time before the handler
//!   does anything. The sign-in form, which has no session yet, is a
//!   double submit: a random value in the cookie [`SIGN_IN_COOKIE`] and in
//!   the form must agree (so no other page can sign an operator in under a
//!   key of its choosing).

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use common::db;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::http::auth::Operator;
use crate::http::error::ApiError;
use crate::keys::hash_secret;
use crate::state::AppState;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "console_session";
/// The sign-in form's double-submit cookie.
pub(crate) const SIGN_IN_COOKIE: &str = "console_sign_in";
/// The form field every console form carries its CSRF token in.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// A signed-in operator.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub key_id: Uuid,
    pub csrf_token: String,
    pub(crate) token_hash: [u8; 32],
}

impl Session {
    /// The operator, as the operator API's functions take it.
    pub fn operator(&self) -> Operator {
        Operator {
            key_id: self.key_id,
        }
    }

    /// Whether `form` carries this session's CSRF token, compared in
    /// constant time, so the answer's timing tells nothing of the token.
    /// [`super::html::csrf_refusal`] answers a form that does not.
    pub fn csrf_matches(&self, form: &[(String, String)]) -> bool {
        let sent = field(form, CSRF_FIELD).unwrap_or_default();
        bool::from(sent.as_bytes().ct_eq(self.csrf_token.as_bytes()))
    }
}

/// The first value of `name` in a submitted form.
pub(crate) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Why a request has no session: none is live (the page sends the browser
/// to sign in), or the sessions could not be read. Answered as a page by
/// `super::html`.
#[derive(Debug)]
pub(crate) enum NoSession {
    SignIn,
    Unavailable(ApiError),
}

/// A page without a live session goes to the sign-in page.
impl FromRequestParts<AppState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NoSession> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE).filter(|t| t.len() <= 200) else {
            return Err(NoSession::SignIn);
        };
        let token_hash = hash_secret(token);
        match db::console_sessions::find(&state.pool, &token_hash).await {
            Ok(Some(row)) => Ok(Session {
                key_id: row.key_id,
                csrf_token: row.csrf_token,
                token_hash,
            }),
            Ok(None) => Err(NoSession::SignIn),
            Err(err) => Err(NoSession::Unavailable(err.into())),
        }
    }
}

/// A cookie of the console: `HttpOnly`, `SameSite=Strict`, under
/// `/console`, `Secure` behind https; removed when `max_age` is zero.
pub(crate) fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age: Duration,
) -> HeaderValue {
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
        assert!(session.csrf_matches(&form("the-token")));
        assert!(!session.csrf_matches(&form("the-toke")));
        assert!(!session.csrf_matches(&form("")));
        assert!(!session.csrf_matches(&[]));
    }
}
