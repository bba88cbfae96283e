//! The published contract (DESIGN.md §11): an OpenAPI 3.1 document generated
//! from the code.
//!
//! Every route is registered once, in the route table of [`crate::router`],
//! through `utoipa_axum::routes!`, which hands the handler to axum and its
//! `#[utoipa::path]` description to the document at the same time; request,
//! answer and error bodies are the very types the handlers (de)serialize,
//! with `ToSchema`. So the document cannot describe a route that is not
//! served, nor miss one that is (`tests/openapi.rs` checks both), and a field
//! added to a wire type shows up in it.
//!
//! What every operation shares is added here, once, rather than repeated on
//! each handler: the error envelope for the statuses any request can meet
//! (`400` for a path, query or header that does not fit, `408`, `500`,
//! `503`; `413` and `415` where there is a body), `Request-Id` on every
//! answer, and for keyed operations the `401`, `403` and `429` answers and
//! the `RateLimit-*` headers.
//!
//! `GET /v1/openapi.json` serves it without a key; `api openapi` prints it;
//! `docs/openapi.json` is a committed copy that a test keeps equal to it.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::http::error::{ErrorEnvelope, ErrorType};
use crate::http::rate_limit::{LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER};
use crate::state::AppState;

/// Name of the bearer security scheme.
pub const BEARER: &str = "bearer";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Payments API",
        description = "Accepts card payments and processes them asynchronously: `POST` answers \
`202 Accepted` at once (or waits with `Prefer: wait=N`), workers charge the card, `GET` shows \
the outcome. Every `POST` takes an `Idempotency-Key`. Errors are one envelope everywhere: \
`{\"error\": {\"type\", \"code\", \"message\", \"param\", \"request_id\"}}`. Requests with an API \
key are rate-limited per key (`RateLimit-*` headers on every answer, `429` with `Retry-After` \
over the limit).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(ErrorEnvelope, ErrorType, crate::payments::view::Expansion)),
    tags(
        (name = "payments", description = "Create, read, list, capture and cancel payments."),
        (name = "refunds", description = "Refund captured payments and read refunds."),
        (name = "webhooks", description = "Webhook endpoints, events and their deliveries."),
        (name = "operators", description = "The dead-letter queue, dead webhook deliveries, the audit log and the console's views, for operator keys only."),
        (name = "receipts", description = "Receipt pages for a payment's customer (no key: the URL is the capability)."),
        (name = "service", description = "Health, readiness, metrics and this document (no key).")
    )
)]
struct ApiDoc;

/// The whole document.
pub fn document() -> OpenApi {
    let mut doc = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .merge(crate::routes::route_table(None))
        .into_openapi();
    add_security_scheme(&mut doc);
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_shared_answers(operation);
        }
    }
    require_every_field(&mut doc);
    doc
}

/// The document as served and committed: pretty JSON and a final newline.
pub fn json() -> Result<String, serde_json::Error> {
    Ok(document().to_pretty_json()? + "\n")
}

fn add_security_scheme(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut http = Http::new(HttpAuthScheme::Bearer);
    http.bearer_format = Some("sk_…".into());
    http.description = Some(
        "`Authorization: Bearer <key>`. A merchant's key (`api keys create`) carries the scopes \
         `payments:read` (reads) and `payments:write` (writes), and for webhook endpoints and \
         events `webhooks:read` and `webhooks:write`, and sees only its merchant's objects; an \
         operator's key (`api keys create-operator`, scope `admin`) reaches only \
         `/v1/admin/…`. Each operation lists the scope it needs."
            .into(),
    );
    components
        .security_schemes
        .insert(BEARER.into(), RefOr::T(SecurityScheme::Http(http)));
}

fn integer_header(description: &str) -> RefOr<Header> {
    RefOr::T(
        HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .build(),
            ))
            .description(Some(description))
            .build(),
    )
}

fn string_header(description: &str) -> RefOr<Header> {
    RefOr::T(
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
            .description(Some(description))
            .build(),
    )
}

/// An error answer: the envelope, with `description`.
fn error_answer(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                    .build(),
            )
            .build(),
    )
}

/// The answers and headers every operation shares (see the module doc).
fn add_shared_answers(operation: &mut Operation) {
    let keyed = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.iter().all(is_empty_requirement));
    let has_input = operation.request_body.is_some()
        || operation
            .parameters
            .as_ref()
            .is_some_and(|params| !params.is_empty());
    let mut shared = Vec::new();
    if has_input || keyed {
        shared.push((
            "400",
            "The request does not fit: a parameter, header or body is invalid (`param` names it).",
        ));
    }
    if keyed {
        shared.push((
            "401",
            "No API key, a malformed `Authorization` header, or a key that is unknown or revoked.",
        ));
        shared.push((
            "403",
            "The key lacks the scope, or is of the wrong kind (merchant or operator).",
        ));
        shared.push((
            "429",
            "This key's rate limit is spent; nothing was done. Retry after `Retry-After` seconds.",
        ));
    }
    shared.push((
        "408",
        "The request took longer than `REQUEST_TIMEOUT` to send or to handle.",
    ));
    if operation.request_body.is_some() {
        shared.push(("413", "The body is larger than 64 KiB."));
        shared.push((
            "415",
            "The body is not sent as `Content-Type: application/json`.",
        ));
    }
    shared.push((
        "500",
        "An internal error; quote the `request_id` to support.",
    ));
    shared.push((
        "503",
        "A dependency (database, broker) is unreachable; see the `code`. Retry after `Retry-After` seconds.",
    ));
    let responses = &mut operation.responses.responses;
    for (status, description) in shared {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| error_answer(description));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        response.headers.insert(
            "Request-Id".into(),
            string_header("This request's id (`req_…`), also in the error envelope."),
        );
        if status == "429" || status == "503" {
            response.headers.insert(
                "Retry-After".into(),
                integer_header("Seconds to wait before retrying."),
            );
        }
        if keyed && status != "401" {
            response.headers.insert(
                header_name(LIMIT_HEADER),
                integer_header("Requests this key may make at once (`RATE_LIMIT_BURST`)."),
            );
            response.headers.insert(
                header_name(REMAINING_HEADER),
                integer_header("Requests this key may still make right now."),
            );
            response.headers.insert(
                header_name(RESET_HEADER),
                integer_header("Seconds until this key's allowance is whole again."),
            );
        }
    }
}

fn is_empty_requirement(requirement: &utoipa::openapi::security::SecurityRequirement) -> bool {
    serde_json::to_value(requirement)
        .ok()
        .and_then(|v| v.as_object().map(serde_json::Map::is_empty))
        .unwrap_or(true)
}

/// `ratelimit-limit` → `RateLimit-Limit`, as the README and RFC drafts spell
/// them (header names are case-insensitive on the wire).
fn header_name(lower: &str) -> String {
    lower
        .split('-')
        .map(|part| match part {
            "ratelimit" => "RateLimit".to_owned(),
            other => {
                let mut chars = other.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Answers carry every field of these objects, `null` when not known yet,
/// never absent (DESIGN.md §5); serde writes every `Option` as `null`, so
/// each property is required (and nullable where it is an `Option`).
const ANSWER_OBJECTS: &[&str] = &[
    "Payment",
    "PaymentMethodOut",
    "CardOut",
    "CustomerOut",
    "ProcessorResponse",
    "Refunds",
    "Refund",
    "ErrorEnvelope",
    "ErrorBody",
    "OperationFailedEnvelope",
    "OperationFailed",
    "OperationError",
    "CaptureDetails",
];

fn require_every_field(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for name in ANSWER_OBJECTS {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(*name) {
            object.required = object.properties.keys().cloned().collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths an axum router serves. axum has no API to list them; its
    /// `Debug` output names each one in quotes. The tests below also check
    /// that this finds known paths (and a plain route added to the table),
    /// so a change of that output fails loudly rather than passing.
    fn served_paths(router: &axum::Router<AppState>) -> std::collections::BTreeSet<String> {
        let debug = format!("{router:?}");
        // The routes proper; the fallback routers after them hold axum's own
        // catch-all paths.
        let (routes, _) = debug
            .split_once("fallback_router")
            .expect("a router's Debug names its fallback router");
        routes
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with('/') && !s.contains("__private__axum"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_router_serves_exactly_the_documented_paths() {
        let (router, _) = crate::routes::route_table(None).split_for_parts();
        let served = served_paths(&router);
        let documented: std::collections::BTreeSet<String> =
            document().paths.paths.keys().cloned().collect();
        assert!(
            served.contains("/v1/payments") && served.contains("/v1/payments/{id}/refund"),
            "could not read the router's paths: {served:?}"
        );
        // The operator console's pages answer HTML to a browser, not the
        // API's JSON: they are in the route table (`console::routes()`) but
        // not in the API's contract.
        let undocumented: Vec<_> = served
            .difference(&documented)
            .filter(|path| !path.starts_with("/console"))
            .collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not in the OpenAPI document: {undocumented:?}; documented but not \
             served: {unserved:?}. Register routes with `utoipa_axum::routes!` in \
             `crate::route_table`, never with a plain `.route(..)`."
        );
    }

    #[test]
    fn a_plain_route_outside_the_document_is_caught() {
        let router = crate::routes::route_table(None)
            .route("/v1/undocumented", axum::routing::get(|| async {}))
            .split_for_parts()
            .0;
        assert!(served_paths(&router).contains("/v1/undocumented"));
        assert!(!document().paths.paths.contains_key("/v1/undocumented"));
    }

    #[test]
    fn every_keyed_operation_documents_the_rate_limit_and_every_error_is_the_envelope() {
        let doc = serde_json::to_value(document()).expect("serializes");
        let mut keyed = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let security = op["security"].as_array().expect("security is explicit");
                let is_keyed = security
                    .iter()
                    .any(|req| req.as_object().is_some_and(|r| !r.is_empty()));
                let responses = op["responses"].as_object().expect("responses");
                for (status, response) in responses {
                    assert!(
                        response["headers"]["Request-Id"].is_object(),
                        "{method} {path} {status}: Request-Id"
                    );
                    if status.starts_with('4') || status.starts_with('5') {
                        let schema = &response["content"]["application/json"]["schema"]["$ref"];
                        assert!(
                            schema == "#/components/schemas/ErrorEnvelope"
                                || (path == "/readyz" && status == "503")
                                // The envelope, with the committed payment in it.
                                || (status == "402"
                                    && schema
                                        == "#/components/schemas/OperationFailedEnvelope"),
                            "{method} {path} {status}: {schema}"
                        );
                    }
                    if is_keyed && status != "401" {
                        for header in ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]
                        {
                            assert!(
                                response["headers"][header].is_object(),
                                "{method} {path} {status}: {header}"
                            );
                        }
                    }
                }
                if is_keyed {
                    keyed += 1;
                    assert!(
                        responses["429"]["headers"]["Retry-After"].is_object(),
                        "{method} {path}: 429 with Retry-After"
                    );
                }
            }
        }
        assert_eq!(keyed, 27, "the keyed operations");
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
    }
}
