//! Extractors whose rejections are [`ApiError`]s naming the `param`.
//!
//! axum's own extractors reject in plain text; the router turns any such
//! answer into the envelope (see [`crate::router`]), but only a typed
//! extractor can say which parameter was wrong. Use these in new handlers.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;

/// The query string decoded into `T`: a value that does not fit, or a
/// parameter given twice, is a `400` naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Decodes a query string, naming the parameter that does not fit.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        // serde names a repeated, unknown or missing parameter in backticks
        // and reports it at the parent's path (the root, here).
        let quoted = message.split('`').nth(1).filter(|q| !q.is_empty());
        let param = match (path.as_str(), quoted) {
            (".", Some(name)) => name.to_owned(),
            (".", None) => "query".to_owned(),
            (path, _) => path.to_owned(),
        };
        let (code, text) = if message.starts_with("duplicate field") {
            (
                "duplicate_parameter",
                format!("`{param}` appears more than once."),
            )
        } else if message.starts_with("unknown field") {
            ("unknown_parameter", format!("Unknown parameter `{param}`."))
        } else if message.starts_with("missing field") {
            (
                "parameter_missing",
                format!("Missing required parameter `{param}`."),
            )
        } else {
            (
                "invalid_parameter",
                format!("`{param}` does not have a valid value."),
            )
        };
        ApiError::invalid(param, code, text)
    })
}
