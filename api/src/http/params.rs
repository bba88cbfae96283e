//! The headers several operations read, as the OpenAPI document shows
//! them. Each is read by hand (by `super::request::Submitted`), so these
//! types only describe it and are never built.

/// `Idempotency-Key` (DESIGN.md §5).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyHeader {
    /// 1 to 255 visible ASCII characters, scoped to the merchant and kept at
    /// least 24 hours. The same key with the same request replays the stored
    /// answer (`Idempotent-Replayed: true`); with a different request it is
    /// `422`; while the first is in flight, `409`.
    #[param(
        rename = "Idempotency-Key",
        value_type = String,
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$",
        example = "order-123456-attempt-1"
    )]
    idempotency_key: Option<String>,
}

/// `Prefer: wait=N` (RFC 7240).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct PreferHeader {
    /// `wait=N`: hold the answer until the operation is terminal or N
    /// seconds pass (at most 30; larger values are capped and
    /// `Preference-Applied` says what was applied). Other preferences are
    /// ignored.
    #[param(
        rename = "Prefer",
        value_type = String,
        required = false,
        example = "wait=1"
    )]
    prefer: Option<String>,
}
