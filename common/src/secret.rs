//! Secrets: random ones (API keys, webhook signing secrets), and sealing
//! secrets at rest.
//!
//! Webhook signing secrets are stored sealed with an AEAD
//! (XChaCha20-Poly1305, from RustCrypto's `chacha20poly1305`) under a key
//! that is not in the database (`SECRETS_KEY`), so a dump of the database
//! alone cannot sign a webhook.
//!
//! - `SECRETS_KEY` is one or more base64 keys of 32 bytes, comma-separated
//!   (`openssl rand -base64 32` makes one). The first seals; every one
//!   listed opens. Each sealed value names the key that sealed it by the
//!   key's fingerprint (the first 8 bytes of its SHA-256, in hex), never the
//!   key.
//! - A sealed value is `sealed:v1:<fingerprint>:<base64url(nonce ‖
//!   ciphertext)>`. The nonce is 24 random bytes (safe to draw at random for
//!   XChaCha20), and the row's id is the associated data, so a sealed value
//!   copied to another row does not open there.
//! - Rotation: put the new key first and keep the old one after it; the
//!   API reseals every stored secret under the first key when it starts
//!   ([`crate::db::webhooks::reseal_secrets`]); once every API and worker
//!   runs with the new list, drop the old key.
//! - A value that is not sealed (a secret stored before this scheme) still
//!   opens as itself, and is sealed by the next API start.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::GeneralPurpose;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// `prefix` and 32 bytes (256 bits) from the thread's CSPRNG (seeded by the
/// operating system), in the base64 alphabet `engine`. The prefix makes a
/// leaked secret recognisable (secret scanners).
pub fn random(prefix: &str, engine: &GeneralPurpose) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", engine.encode(bytes))
}

const PREFIX: &str = "sealed:v1:";
const NONCE_LEN: usize = 24;

/// The keys of `SECRETS_KEY`, the sealing one first. `Debug` shows only
/// their fingerprints.
#[derive(Clone)]
pub struct SecretsKeys {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl fmt::Debug for SecretsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SecretsKeys")
            .field("fingerprints", &ids)
            .finish()
    }
}

/// Why a stored secret does not open. Says nothing of the value.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("sealed with key {0}, which SECRETS_KEY does not list")]
    UnknownKey(String),
    #[error("the sealed value is malformed or was altered")]
    Corrupt,
}

impl FromStr for SecretsKeys {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut keys = Vec::new();
        for (i, encoded) in list.split(',').map(str::trim).enumerate() {
            let bytes = STANDARD
                .decode(encoded)
                .map_err(|_| format!("SECRETS_KEY: key {} is not base64", i + 1))?;
            if bytes.len() != 32 {
                return Err(format!(
                    "SECRETS_KEY: key {} has {} bytes; each key has 32 (`openssl rand -base64 32`)",
                    i + 1,
                    bytes.len()
                ));
            }
            let fingerprint = hex::encode(&Sha256::digest(&bytes)[..8]);
            let cipher = XChaCha20Poly1305::new(Key::from_slice(&bytes));
            keys.push((fingerprint, cipher));
        }
        if keys.is_empty() {
            return Err("SECRETS_KEY: no key".into());
        }
        Ok(Self { keys })
    }
}

impl SecretsKeys {
    /// Seals `secret` for the row `row_id` under the first key.
    pub fn seal(&self, secret: &str, row_id: &[u8]) -> String {
        let (fingerprint, cipher) = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: secret.as_bytes(),
            aad: row_id,
        };
        // Encryption with a valid key and nonce cannot fail for a message of
        // this size; an empty ciphertext would not open, never leak.
        let sealed = cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        format!("{PREFIX}{fingerprint}:{}", URL_SAFE_NO_PAD.encode(blob))
    }

    /// The secret that `stored` holds for the row `row_id`.
    pub fn open(&self, stored: &str, row_id: &[u8]) -> Result<String, OpenError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            // Stored before secrets were sealed: the value is the secret.
            return Ok(stored.to_owned());
        };
        let (fingerprint, blob) = rest.split_once(':').ok_or(OpenError::Corrupt)?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| id == fingerprint)
            .ok_or_else(|| OpenError::UnknownKey(fingerprint.to_owned()))?;
        let blob = URL_SAFE_NO_PAD
            .decode(blob)
            .map_err(|_| OpenError::Corrupt)?;
        if blob.len() <= NONCE_LEN {
            return Err(OpenError::Corrupt);
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: row_id,
        };
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| OpenError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| OpenError::Corrupt)
    }

    /// The fingerprint of the sealing key.
    pub fn current_fingerprint(&self) -> &str {
        &self.keys[0].0
    }

    /// Whether `stored` is sealed under the first key (nothing to reseal).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(fingerprint, _)| fingerprint == self.keys[0].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const B: &str = "HxwdGhsYGRYXFBUSExAREA4PDA0KCwgJBgcEBQIDAAE=";

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_its_row() {
        let keys: SecretsKeys = A.parse().expect("keys");
        let sealed = keys.seal("whsec_topsecret", b"row-1");
        assert!(!sealed.contains("topsecret"));
        assert!(keys.is_current(&sealed));
        assert_eq!(
            keys.open(&sealed, b"row-1").expect("opens"),
            "whsec_topsecret"
        );
        assert!(matches!(
            keys.open(&sealed, b"row-2"),
            Err(OpenError::Corrupt)
        ));
        let other: SecretsKeys = B.parse().expect("keys");
        assert!(matches!(
            other.open(&sealed, b"row-1"),
            Err(OpenError::UnknownKey(_))
        ));
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.open(&altered, b"row-1").is_err());
    }

    #[test]
    fn after_a_rotation_the_old_key_still_opens_and_the_new_one_seals() {
        let old: SecretsKeys = A.parse().expect("keys");
        let sealed = old.seal("whsec_x", b"r");
        let rotated: SecretsKeys = format!("{B},{A}").parse().expect("keys");
        assert!(!rotated.is_current(&sealed));
        assert_eq!(rotated.open(&sealed, b"r").expect("opens"), "whsec_x");
        assert!(rotated.is_current(&rotated.seal("whsec_x", b"r")));
    }

    #[test]
    fn keys_that_are_not_32_bytes_of_base64_are_refused_by_name() {
        for bad in [
            "",
            "not base64!",
            "AAEC",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,x",
        ] {
            let err = bad.parse::<SecretsKeys>().expect_err(bad);
            assert!(err.starts_with("SECRETS_KEY"), "{err}");
        }
        // The keys never show in Debug.
        let keys: SecretsKeys = A.parse().expect("keys");
        assert!(!format!("{keys:?}").contains(A));
    }
}
