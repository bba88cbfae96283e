//! Random secrets: API keys and webhook signing secrets.

use base64::engine::GeneralPurpose;
use base64::Engine as _;
use rand::RngCore as _;

/// `prefix` and 32 bytes (256 bits) from the thread's CSPRNG (seeded by the
/// operating system), in the base64 alphabet `engine`. The prefix makes a
/// leaked secret recognisable (secret scanners).
pub fn random(prefix: &str, engine: &GeneralPurpose) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", engine.encode(bytes))
}
