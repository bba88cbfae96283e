//! The published contract: the committed `docs/openapi.json` is what the code
//! generates, the API serves it without a key, and every documented
//! operation is served (and nothing else on those paths).

use std::collections::BTreeSet;

use serde_json::Value;
use testkit::TestApp;

const REGENERATE: &str = "cargo run -p api -- openapi > docs/openapi.json";

#[test]
fn the_committed_spec_is_what_the_code_generates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = api::openapi::json().expect("the document serializes");
    assert!(
        committed == generated,
        "docs/openapi.json differs from the OpenAPI document the code generates. \
         Regenerate it with `{REGENERATE}` and commit it."
    );
}

#[tokio::test]
async fn the_spec_is_served_without_a_key_and_every_documented_operation_is_routed() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(format!("{}/v1/openapi.json", app.api_url))
        .send()
        .await
        .expect("GET /v1/openapi.json");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "served as JSON"
    );
    let served: Value = response.json().await.expect("JSON");
    let generated: Value =
        serde_json::from_str(&api::openapi::json().expect("serializes")).expect("JSON");
    assert_eq!(
        served, generated,
        "the served document is the generated one"
    );
    assert_eq!(served["openapi"], "3.1.0");

    let methods = ["get", "post", "put", "patch", "delete"];
    for (path, item) in served["paths"].as_object().expect("paths") {
        let url = format!(
            "{}{}",
            app.api_url,
            path.replace("{id}", "pay_00000000-0000-7000-8000-000000000000")
        );
        let documented: BTreeSet<&str> = item
            .as_object()
            .expect("path item")
            .keys()
            .map(String::as_str)
            .filter(|k| methods.contains(k))
            .collect();
        for method in methods {
            let response = app
                .http
                .request(method.to_uppercase().parse().expect("method"), &url)
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let message = body["error"]["message"].as_str().unwrap_or_default();
            if documented.contains(method) {
                assert!(
                    status != 405 && message != "No such endpoint.",
                    "{method} {path} is documented but not routed: {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is not documented, so must not be served: {body}"
                );
            }
        }
    }
}
