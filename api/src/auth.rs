//! API key authentication and scopes.
//!
//! `Authorization: Bearer sk_…`. The secret is hashed (SHA-256) and looked up
//! by hash; the plain secret exists only in the request and in the output of
//! `api keys create`. Keys carry scopes; a handler asks for the one it needs
//! with [`Caller::require`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use common::domain::Scope;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

/// Prefix of every secret, so a leaked one is recognisable (secret scanners).
pub const SECRET_PREFIX: &str = "sk_";

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

/// SHA-256 of a secret: what the database stores.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new secret with 256 bits of entropy.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
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
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 200)
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "invalid_authorization_header",
                    "The Authorization header must be `Bearer <key>`.",
                )
            })?;
        let key = common::db::api_keys::find_by_hash(&state.pool, &hash_secret(secret))
            .await?
            .ok_or_else(|| {
                ApiError::unauthenticated("invalid_api_key", "The API key is invalid or revoked.")
            })?;
        let scopes = key
            .scopes
            .iter()
            .filter_map(|s| s.parse::<Scope>().ok())
            .collect();
        tracing::Span::current().record("merchant_id", tracing::field::display(key.merchant_id));
        Ok(Caller {
            merchant_id: key.merchant_id,
            key_id: key.id,
            scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_unique_and_hash_deterministically() {
        let a = generate_secret();
        let b = generate_secret();
        assert!(a.starts_with(SECRET_PREFIX));
        assert_ne!(a, b);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }
}
