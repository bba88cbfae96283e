//! What a client sends with a `POST`, read once at the edge.
//!
//! A `POST` handler takes one [`Submitted<T>`]: the caller (authenticated,
//! with the scope the body type asks for), the body read and decoded into
//! `T` (and the bytes as sent, for the idempotency hash), the
//! `Idempotency-Key`, `Prefer: wait=N`, and the request behind the change
//! for its event. Everything a client can get wrong here is rejected before
//! the handler runs, in this order: the key (`401`/`403`), the content type
//! (`415`), the size (`413`), the JSON (`400` naming the `param`), then the
//! `Idempotency-Key` header (`400`). A handler then checks only the domain
//! rules of its body. [`JsonBody<T>`] is the body alone, for endpoints that
//! take no merchant key.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use common::db::lifecycle::Origin;
use common::domain::{IdempotencyKey, Scope};
use serde::de::DeserializeOwned;

use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::idempotency::{self, Begun};
use crate::state::AppState;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest `Prefer: wait=N` honoured; larger values are capped (RFC 7240
/// lets a server apply a preference partly) and `Preference-Applied` says so.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// A JSON request body's type.
pub trait JsonRequest: DeserializeOwned + Send {
    /// What a request without any body stands for (`{}`); `None` when the
    /// body is required.
    fn when_absent() -> Option<Self> {
        None
    }
}

/// The body of a `POST` that a merchant's key sends.
pub trait Submission: JsonRequest {
    /// The scope the key needs.
    const SCOPE: Scope;
    /// Whether the endpoint honours `Idempotency-Key`; when not, the header
    /// is not read at all.
    const IDEMPOTENT: bool = true;
}

/// A request body read and decoded, and the bytes it was decoded from.
#[derive(Debug)]
pub struct JsonBody<T> {
    pub value: T,
    /// As sent; `{}` for a request without a body.
    pub bytes: Bytes,
}

impl<T: JsonRequest> JsonBody<T> {
    async fn read(headers: &HeaderMap, body: Body) -> Result<Self, ApiError> {
        if let Some(value) = T::when_absent().filter(|_| is_absent(headers)) {
            return Ok(Self {
                value,
                bytes: Bytes::from_static(b"{}"),
            });
        }
        let bytes = read_json_body(headers, body).await?;
        let value = parse_json(&bytes)?;
        Ok(Self { value, bytes })
    }
}

impl<T: JsonRequest, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        Self::read(&parts.headers, body).await
    }
}

/// Whether a request has no body at all: `Content-Length: 0`, or neither a
/// content type nor a chunked body.
fn is_absent(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0")
        || (!headers.contains_key(header::CONTENT_TYPE)
            && !headers.contains_key(header::TRANSFER_ENCODING))
}

/// A merchant's `POST`, everything in it parsed: the body, and what was
/// [`Sent`] with it.
#[derive(Debug)]
pub struct Submitted<T> {
    pub body: T,
    pub sent: Sent,
}

/// Everything of a `POST` but its decoded body.
#[derive(Debug)]
pub struct Sent {
    pub caller: Caller,
    /// The body as sent (`{}` for none): what the idempotency hash covers.
    pub bytes: Bytes,
    pub idempotency_key: Option<IdempotencyKey>,
    /// `Prefer: wait=N`, capped at [`MAX_WAIT`].
    pub wait: Option<Duration>,
    /// This request's id and `Idempotency-Key`, for the change's event.
    pub origin: Origin,
}

impl Sent {
    /// Claims the `Idempotency-Key`, if one was sent, for `route` (the
    /// operation, `POST /v1/payments`, so one key cannot stand for two).
    pub async fn begin(&self, state: &AppState, route: &str) -> Result<Begun, ApiError> {
        idempotency::begin(
            state,
            self.caller.merchant_id,
            self.idempotency_key.as_ref(),
            route,
            &self.bytes,
        )
        .await
    }
}

impl<T: Submission> FromRequest<AppState> for Submitted<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let caller = Caller::from_request_parts(&mut parts, state).await?;
        caller.require(T::SCOPE)?;
        let JsonBody { value, bytes } = JsonBody::<T>::read(&parts.headers, body).await?;
        let idempotency_key = if T::IDEMPOTENT {
            idempotency::parse_header(&parts.headers)?
        } else {
            None
        };
        let origin = Origin {
            request_id: crate::http::request_id::current_request_id(),
            idempotency_key: idempotency_key.as_ref().map(|key| key.as_str().to_owned()),
        };
        Ok(Self {
            body: value,
            sent: Sent {
                caller,
                bytes,
                idempotency_key,
                wait: prefer_wait(&parts.headers),
                origin,
            },
        })
    }
}

/// Reads a request body that must be JSON: `415` for another content type,
/// `413` past [`MAX_BODY_BYTES`].
async fn read_json_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::bad_request(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "The request body must be JSON, sent with `Content-Type: application/json`.",
        ));
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::bad_request(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("The request body must be at most {MAX_BODY_BYTES} bytes."),
            )
        })
}

/// Decodes a JSON body, turning serde's errors into a `param` and a message.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Syntax first (including trailing garbage), so a broken document is
    // reported as such rather than as its first missing field.
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|_| {
        ApiError::bad_request(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "The request body is not valid JSON.",
        )
    })?;
    // Then repeated keys, which typed decoding would report only for struct
    // fields (and maps would silently take the last copy of).
    if let Some(param) = duplicate_key(body) {
        return Err(ApiError::invalid(
            param.clone(),
            "duplicate_parameter",
            format!("`{param}` appears more than once."),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if matches!(
            inner.classify(),
            serde_json::error::Category::Syntax
                | serde_json::error::Category::Eof
                | serde_json::error::Category::Io
        ) {
            return ApiError::bad_request(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "The request body is not valid JSON.",
            );
        }
        data_error(&path, &inner.to_string())
    })?;
    Ok(parsed)
}

/// Maps a serde data error at `path` to a 400. serde reports missing and
/// unknown fields with the name in backticks and the path of the parent.
fn data_error(path: &str, message: &str) -> ApiError {
    let parent = if path == "." { "" } else { path };
    let join = |name: &str| {
        if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    let quoted = message.split('`').nth(1).unwrap_or_default();
    if message.starts_with("unknown field") {
        // The tracked path already ends with the unknown key.
        let param = if parent.ends_with(quoted) && !quoted.is_empty() {
            parent.to_owned()
        } else {
            join(quoted)
        };
        ApiError::invalid(
            param.clone(),
            "unknown_parameter",
            format!("Unknown parameter `{param}`."),
        )
    } else if message.starts_with("duplicate field") {
        // Caught earlier by `duplicate_key`; kept so the answer stays precise
        // if that pass is ever bypassed.
        let param = join(quoted);
        ApiError::invalid(
            param.clone(),
            "duplicate_parameter",
            format!("`{param}` appears more than once."),
        )
    } else if message.starts_with("unknown variant") {
        // A value outside a closed set: list the set, never echo the value.
        let param = if parent.is_empty() {
            "body".to_owned()
        } else {
            parent.to_owned()
        };
        let allowed = message
            .split("expected ")
            .nth(1)
            .and_then(|rest| rest.split(" at line").next())
            .unwrap_or("a documented value")
            .replace('`', "");
        ApiError::invalid(
            param.clone(),
            "invalid_value",
            format!("`{param}` must be {allowed}."),
        )
    } else if message.starts_with("missing field") {
        let param = join(quoted);
        ApiError::invalid(
            param.clone(),
            "parameter_missing",
            format!("Missing required parameter `{param}`."),
        )
    } else {
        // A wrong type: say what was expected without echoing the value.
        let expected = message
            .split("expected ")
            .nth(1)
            .and_then(|rest| rest.split(" at line").next())
            .unwrap_or("another type");
        let param = if parent.is_empty() {
            "body".to_owned()
        } else {
            parent.to_owned()
        };
        ApiError::invalid(
            param.clone(),
            "invalid_type",
            format!("`{param}` has the wrong type: expected {expected}."),
        )
    }
}

/// The path (`a.b[0].c`, as serde_path_to_error writes it) of the first key
/// that appears twice in one JSON object of a syntactically valid document.
fn duplicate_key(body: &[u8]) -> Option<String> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let walk = KeyWalk {
        path: String::new(),
        found: &mut found,
    };
    // The only error the walk makes is the one that records `found`.
    let _ = serde::de::DeserializeSeed::deserialize(walk, &mut deserializer);
    found
}

/// Visits every value of a JSON document, remembering each object's keys.
struct KeyWalk<'a> {
    /// Where the visited value sits; empty at the root.
    path: String,
    found: &'a mut Option<String>,
}

impl KeyWalk<'_> {
    fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for KeyWalk<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyWalk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let element = KeyWalk {
                path: format!("{}[{index}]", self.path),
                found: &mut *self.found,
            };
            if seq.next_element_seed(element)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = self.child(&key);
            if !seen.insert(key) {
                *self.found = Some(path);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value_seed(KeyWalk {
                path,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }
}

/// `Prefer: wait=N` (RFC 7240), capped at [`MAX_WAIT`]. Other preferences
/// are ignored, as the RFC allows.
fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|pref| {
            let (name, value) = pref.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .next()
        .map(|secs| Duration::from_secs(secs).min(MAX_WAIT))
}

/// Says in `response` which wait was applied (`Preference-Applied:
/// wait=N`), when the client asked for one.
pub(crate) fn preference_applied(response: &mut Response, wait: Option<Duration>) {
    if let Some(wait) = wait {
        if let Ok(value) = HeaderValue::from_str(&format!("wait={}", wait.as_secs())) {
            response.headers_mut().insert("preference-applied", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_is_parsed_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(prefer_wait(&headers), None);
        headers.insert("prefer", HeaderValue::from_static("respond-async, wait=10"));
        assert_eq!(prefer_wait(&headers), Some(Duration::from_secs(10)));
        headers.insert("prefer", HeaderValue::from_static("wait=600"));
        assert_eq!(prefer_wait(&headers), Some(MAX_WAIT));
        headers.insert("prefer", HeaderValue::from_static("wait=soon"));
        assert_eq!(prefer_wait(&headers), None);
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth_and_only_there() {
        assert_eq!(
            duplicate_key(br#"{"a":1,"b":{"c":[{"d":1,"d":2}]}}"#).as_deref(),
            Some("b.c[0].d")
        );
        assert_eq!(duplicate_key(br#"{"a":1,"a":1}"#).as_deref(), Some("a"));
        assert_eq!(
            duplicate_key(br#"{"a":{"x":1},"b":{"x":1},"c":[1,"x",null,true,-1.5]}"#),
            None
        );
    }
}
