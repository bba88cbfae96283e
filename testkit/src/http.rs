//! Requests to the API as a test's merchant (its `key`), as another key, or
//! with no key, and the checks every answer shares.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

use crate::{payment_body, TestApp};

impl TestApp {
    /// The API's URL of `path` (`/v1/...`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }

    /// A request to `path` with this test's key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_as(&self.key, method, path)
    }

    /// A request to `path` with `key`.
    pub fn request_as(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(key)
    }

    /// `GET path` with `key`: the whole response (status, headers, body).
    pub async fn get_as(&self, key: &str, path: &str) -> Response {
        self.request_as(key, Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
    }

    /// `POST path` with `key` and a JSON body: the whole response.
    pub async fn post_as(&self, key: &str, path: &str, body: &Value) -> Response {
        self.request_as(key, Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {path}: {err}"))
    }

    /// `GET path` with this test's key: status and JSON body.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(&self.key, Method::GET, path, None, &[]).await
    }

    /// `POST path` with this test's key: status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(&self.key, Method::POST, path, Some(body), &[])
            .await
    }

    /// `POST path` with this test's key and extra headers (`Prefer`,
    /// `Idempotency-Key`): status and JSON body.
    pub async fn post_with(
        &self,
        path: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        self.call(&self.key, Method::POST, path, Some(body), headers)
            .await
    }

    /// Any request with `key`: status and JSON body (`null` for an empty
    /// body; a body that is not JSON fails the test).
    pub async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.request_as(key, method.clone(), path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        status_and_json(response).await
    }

    /// Registers a webhook endpoint (`POST /v1/webhook_endpoints`); its id
    /// and secret.
    pub async fn register_webhook(&self, url: &str, events: &[&str]) -> (String, String) {
        let (status, endpoint) = self
            .post(
                "/v1/webhook_endpoints",
                json!({"url": url, "events": events, "description": "test receiver"}),
            )
            .await;
        assert_eq!(status, 201, "{endpoint}");
        let secret = endpoint["secret"].as_str().expect("secret").to_owned();
        (endpoint["id"].as_str().expect("id").to_owned(), secret)
    }

    /// `POST /v1/payments` with this test's key.
    pub async fn post_payment(&self, body: &Value) -> Response {
        self.post_payment_with(body, &[]).await
    }

    /// `POST /v1/payments` with extra headers.
    pub async fn post_payment_with(&self, body: &Value, headers: &[(&str, &str)]) -> Response {
        let mut request = self.request(Method::POST, "/v1/payments").json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST /v1/payments")
    }

    /// Creates a payment for `token` and returns its id (asserts 202).
    pub async fn create_payment(&self, token: &str) -> String {
        self.create_payment_as(&self.key, &payment_body(token))
            .await
    }

    /// Creates the payment `body` with `key` and returns its id (asserts
    /// 202).
    pub async fn create_payment_as(&self, key: &str, body: &Value) -> String {
        let response = self.post_as(key, "/v1/payments", body).await;
        assert_eq!(response.status(), 202, "payment accepted");
        let payment: Value = response.json().await.expect("json body");
        payment["id"].as_str().expect("id").to_owned()
    }

    /// Creates `n` payments for `token`; returns their ids.
    pub async fn submit(&self, token: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.create_payment(token).await);
        }
        ids
    }

    /// `GET /v1/payments/:id` (asserts 200).
    pub async fn payment(&self, id: &str) -> Value {
        let response = self.get_as(&self.key, &format!("/v1/payments/{id}")).await;
        assert_eq!(response.status(), 200, "GET {id}");
        response.json().await.expect("json")
    }

    /// Creates a key with `scopes` for `merchant`.
    pub async fn key_for(&self, merchant: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        api::keys::create_key(&self.pool, merchant, "test", &scopes)
            .await
            .expect("create key")
            .1
    }

    /// Creates an operator key (bound to no merchant; the `/v1/admin`
    /// endpoints only).
    pub async fn operator_key(&self) -> String {
        api::keys::create_operator_key(&self.pool, "test-operator")
            .await
            .expect("create operator key")
            .1
    }
}

/// A response's status and JSON body (`null` for an empty body; a body that
/// is not JSON fails the test).
pub async fn status_and_json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("a body");
    if text.is_empty() {
        return (status, Value::Null);
    }
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{status}: the body is not JSON ({err}): {text}"));
    (status, body)
}

/// Asserts the response is the documented error envelope with this status,
/// type and param, in JSON, quoting the response's own `Request-Id`, with a
/// code and a message; returns the error object.
pub async fn assert_error(
    response: Response,
    status: u16,
    kind: &str,
    param: Option<&str>,
) -> Value {
    let got = response.status().as_u16();
    let request_id = response
        .headers()
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("Request-Id header on every response");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "status; body: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "JSON, not {content_type:?}: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("JSON error body");
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["param"].as_str(), param, "{body}");
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(error["request_id"], request_id.as_str(), "{body}");
    error.clone()
}

/// `body` with the field at `path` (object keys, outermost first) set to
/// `value`.
pub fn with_field(mut body: Value, path: &[&str], value: Value) -> Value {
    let mut target = &mut body;
    for key in &path[..path.len() - 1] {
        target = &mut target[*key];
    }
    target[path[path.len() - 1]] = value;
    body
}

/// Every key of `value`, depth first, in the order the answer wrote them
/// (`serde_json` keeps the order here: its `preserve_order` feature), as
/// dotted paths; array elements share their array's path. Two answers of one
/// object list the same keys in the same order.
pub fn key_order(value: &Value) -> Vec<String> {
    fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let here = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    out.push(here.clone());
                    walk(child, &here, out);
                }
            }
            Value::Array(items) => {
                if let Some(first) = items.first() {
                    walk(first, path, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out
}
