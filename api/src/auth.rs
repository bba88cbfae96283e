//! API key authentication: two principals, merchants and operators.
//!
//! `Authorization: Bearer sk_…`. The secret is hashed (SHA-256) and looked up
//! by hash; the plain secret exists only in the request and in the output of
//! `api keys create` / `api keys create-operator` (made in [`crate::keys`]).
//!
//! - A **merchant key** ([`Caller`]) belongs to one merchant and carries
//!   merchant scopes ([`Scope`]); a handler asks for the one it needs with
//!   [`Caller::require`], and every query it makes is bound to
//!   `caller.merchant_id`, so another merchant's data is a `404`.
//! - An **operator key** ([`Operator`]) belongs to no merchant. It reaches the
//!   operator endpoints (`/v1/admin/…`: the dead-letter queue, which holds
//!   every merchant's jobs) and nothing else.
//!
//! The two never stand in for each other: an operator key on a merchant
//! endpoint and a merchant key on an operator endpoint are both `403`, and
//! since [`Scope`] has no `admin`, no merchant key can be given operator
//! powers (the database refuses it too: `api_keys_principal_check`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use common::db::api_keys::ApiKeyRow;
use common::domain::Scope;
use uuid::Uuid;

use crate::error::ApiError;
use crate::keys::hash_secret;
use crate::AppState;

/// The authenticated merchant and what its key may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub merchant_id: Uuid,
    pub key_id: Uuid,
    scopes: Vec<Scope>,
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "This API key lacks the `{}` scope.",
                scope.as_str()
            )))
        }
    }
}

/// An authenticated operator: a key bound to no merchant.
#[derive(Debug, Clone)]
pub struct Operator {
    pub key_id: Uuid,
}

/// A key already authenticated for this request (by the rate limiter, which
/// must know the key before the handler runs), so the extractors below do not
/// look it up a second time.
#[derive(Debug, Clone)]
pub struct AuthenticatedKey(pub ApiKeyRow);

/// The live key the request presents: `401` when there is none.
pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> Result<ApiKeyRow, ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "missing_api_key",
                "No API key provided. Send `Authorization: Bearer <key>`.",
            )
        })?;
    let secret = header
        .to_str()
        .ok()
        .and_then(bearer_credentials)
        .filter(|s| !s.is_empty() && s.len() <= 200)
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "invalid_authorization_header",
                "The Authorization header must be `Bearer <key>`.",
            )
        })?;
    common::db::api_keys::find_by_hash(&state.pool, &hash_secret(secret))
        .await?
        .ok_or_else(|| {
            ApiError::unauthenticated("invalid_api_key", "The API key is invalid or revoked.")
        })
}

/// The credentials of `Bearer <key>`: the scheme in any case (RFC 9110
/// §11.1), one or more spaces before the key.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// The request's key: the one the rate limiter authenticated, or looked up
/// now.
async fn key_of(parts: &Parts, state: &AppState) -> Result<ApiKeyRow, ApiError> {
    match parts.extensions.get::<AuthenticatedKey>() {
        Some(AuthenticatedKey(key)) => Ok(key.clone()),
        None => authenticate(&parts.headers, state).await,
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = key_of(parts, state).await?;
        let Some(merchant_id) = key.merchant_id else {
            return Err(ApiError::permission(
                "operator_key",
                "This is an operator key: it belongs to no merchant and reaches only the \
                 operator endpoints (/v1/admin/…). Use a merchant's key here.",
            ));
        };
        // Only merchant scopes parse; anything else a row might hold grants
        // nothing.
        let scopes = key
            .scopes
            .iter()
            .filter_map(|s| s.parse::<Scope>().ok())
            .collect();
        tracing::Span::current().record("merchant_id", tracing::field::display(merchant_id));
        Ok(Caller {
            merchant_id,
            key_id: key.id,
            scopes,
        })
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = key_of(parts, state).await?;
        if key.merchant_id.is_some() {
            return Err(ApiError::permission(
                "operator_key_required",
                "This endpoint is for operators: merchant keys never reach it, whatever \
                 their scopes. Operators use a key made with `api keys create-operator`.",
            ));
        }
        Ok(Operator { key_id: key.id })
    }
}
