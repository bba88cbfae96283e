//! API keys: making them. Secrets, their hashes and prefixes, and the two
//! kinds of key (see [`crate::auth`], which checks them on each request):
//! [`create_key`] for a merchant, [`create_operator_key`] for an operator.
//!
//! The plain secret exists only in the value these functions return (which
//! `api keys create` prints once); the database keeps its SHA-256 and its
//! first characters.

use common::db::api_keys;
use common::domain::{DomainError, Scope};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Prefix of every secret, so a leaked one is recognisable (secret scanners).
pub const SECRET_PREFIX: &str = "sk_";

/// SHA-256 of a secret: what the database stores.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new secret with 256 bits of entropy.
pub fn generate_secret() -> String {
    common::secret::random(
        SECRET_PREFIX,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    )
}

/// The first characters of a secret, kept so operators can tell keys apart.
fn secret_prefix(secret: &str) -> String {
    secret.chars().take(8).collect()
}

/// A key or merchant name: 1 to 255 characters, no control characters (they
/// would reach `keys list`, logs and terminals).
pub(crate) fn parse_name(value: &str) -> Result<String, String> {
    let len = value.chars().count();
    if !(1..=255).contains(&len) {
        return Err("a name is 1 to 255 characters".into());
    }
    if value.chars().any(char::is_control) {
        return Err("a name may not contain control characters".into());
    }
    Ok(value.to_owned())
}

/// A merchant scope; `admin` gets an error naming the operator command.
pub(crate) fn parse_scope(value: &str) -> Result<Scope, String> {
    value.trim().parse().map_err(|e: DomainError| e.0)
}

/// Creates a key for the named merchant (created if new); returns its id
/// and secret. Only merchant scopes are accepted: asking for `admin` is an
/// error that points to [`create_operator_key`].
pub async fn create_key(
    pool: &sqlx::PgPool,
    merchant: &str,
    name: &str,
    scopes: &[String],
) -> anyhow::Result<(Uuid, String)> {
    let scopes = scopes
        .iter()
        .map(|s| parse_scope(s).map(|s| s.as_str().to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
    parse_name(merchant).map_err(|e| anyhow::anyhow!("--merchant: {e}"))?;
    parse_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let merchant_id = api_keys::ensure_merchant(pool, merchant).await?;
    let secret = generate_secret();
    let id = api_keys::insert(
        pool,
        merchant_id,
        name,
        &secret_prefix(&secret),
        &hash_secret(&secret),
        &scopes,
    )
    .await?;
    Ok((id, secret))
}

/// Creates an operator key (no merchant); returns its id and secret.
pub async fn create_operator_key(
    pool: &sqlx::PgPool,
    name: &str,
) -> anyhow::Result<(Uuid, String)> {
    parse_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let secret = generate_secret();
    let id = api_keys::insert_operator(pool, name, &secret_prefix(&secret), &hash_secret(&secret))
        .await?;
    Ok((id, secret))
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

    #[test]
    fn names_are_bounded_and_free_of_control_characters() {
        assert!(parse_name("acme").is_ok());
        assert!(parse_name("").is_err());
        assert!(parse_name(&"n".repeat(256)).is_err());
        assert!(parse_name("ac\u{1b}[2Jme").is_err());
        assert!(parse_name("line\nbreak").is_err());
    }
}
