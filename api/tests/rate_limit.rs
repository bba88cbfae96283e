//! Rate limits per API key (DESIGN.md §11): over the limit a key gets `429`
//! in the envelope with `Retry-After`, every answer carries the `RateLimit-*`
//! headers, a refused request writes nothing, the key works again after
//! `Retry-After`, and one key's traffic never limits another's.

use std::num::NonZeroU32;
use std::time::Duration;

use serde_json::Value;
use testkit::{payment_body, Options, TestApp};

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

struct Answer {
    status: u16,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<u64>,
    retry_after: Option<u64>,
    request_id: Option<String>,
    replayed: bool,
    body: Value,
    idempotency_key: String,
}

async fn post(app: &TestApp, key: &str, idempotency_key: String) -> Answer {
    let response = app
        .http
        .post(format!("{}/v1/payments", app.api_url))
        .bearer_auth(key)
        .header("Idempotency-Key", &idempotency_key)
        .json(&payment_body("tok_visa"))
        .send()
        .await
        .expect("POST /v1/payments");
    Answer {
        status: response.status().as_u16(),
        limit: header(&response, "ratelimit-limit"),
        remaining: header(&response, "ratelimit-remaining"),
        reset: header(&response, "ratelimit-reset"),
        retry_after: header(&response, "retry-after"),
        request_id: response
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        replayed: response.headers().contains_key("idempotent-replayed"),
        body: response.json().await.expect("JSON body"),
        idempotency_key,
    }
}

#[tokio::test]
async fn a_key_over_its_limit_is_refused_without_writing_and_recovers_after_retry_after() {
    let five = NonZeroU32::new(5).expect("non-zero");
    let app = TestApp::with(Options {
        workers: 0,
        rate_limit_per_second: five,
        rate_limit_burst: five,
        ..Options::default()
    })
    .await;

    // 30 requests at once with one key, each with its own Idempotency-Key.
    let answers =
        futures_util::future::join_all((0..30).map(|i| post(&app, &app.key, format!("burst-{i}"))))
            .await;
    let accepted: Vec<&Answer> = answers.iter().filter(|a| a.status == 202).collect();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        accepted.len() + refused.len(),
        30,
        "every answer is 202 or 429: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert!(accepted.len() >= 5, "the burst of 5 is allowed");
    assert!(
        refused.len() >= 15,
        "30 requests at once with 5 per second: most are refused ({} were)",
        refused.len()
    );

    for answer in &accepted {
        assert_eq!(answer.limit, Some(5), "RateLimit-Limit on a 202");
        assert!(
            answer.remaining.is_some_and(|r| r < 5),
            "RateLimit-Remaining"
        );
        assert!(answer.reset.is_some_and(|r| r >= 1), "RateLimit-Reset");
    }
    for answer in &refused {
        assert_eq!(answer.limit, Some(5), "RateLimit-Limit on a 429");
        assert_eq!(answer.remaining, Some(0), "RateLimit-Remaining on a 429");
        assert!(answer.reset.is_some_and(|r| r >= 1), "RateLimit-Reset");
        let retry_after = answer.retry_after.expect("Retry-After on a 429");
        assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
        let error = &answer.body["error"];
        assert_eq!(error["type"], "rate_limit_error");
        assert_eq!(error["code"], "rate_limit_exceeded");
        assert_eq!(
            error["request_id"].as_str(),
            answer.request_id.as_deref(),
            "the envelope quotes the Request-Id"
        );
    }

    // Nothing was written for a refused request: only the accepted ones are
    // stored, and a refused request's Idempotency-Key is still free.
    assert_eq!(app.payment_count().await, accepted.len() as i64);

    // Another merchant's key has a bucket of its own.
    let other = app
        .key_for("second-merchant", &["payments:read", "payments:write"])
        .await;
    let answer = post(&app, &other, "other-key".into()).await;
    assert_eq!(
        answer.status, 202,
        "another key is not limited by the first"
    );
    assert_eq!(
        answer.remaining,
        Some(4),
        "its bucket is full but for this one"
    );

    // After Retry-After seconds the first key works again; retrying a
    // refused request with its Idempotency-Key makes the payment (it was
    // never stored, so nothing is replayed).
    let wait = refused
        .iter()
        .filter_map(|a| a.retry_after)
        .max()
        .unwrap_or(1);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let retried = post(&app, &app.key, refused[0].idempotency_key.clone()).await;
    assert_eq!(retried.status, 202, "the key works again: {}", retried.body);
    assert!(!retried.replayed, "a refused request stored no answer");
    assert_eq!(app.payment_count().await, accepted.len() as i64 + 2);

    // Reads carry the headers too, errors included.
    let id = retried.body["id"].as_str().expect("id");
    for path in [format!("/v1/payments/{id}"), "/v1/payments/pay_nope".into()] {
        let response = app
            .http
            .get(format!("{}{path}", app.api_url))
            .bearer_auth(&app.key)
            .send()
            .await
            .expect("GET");
        assert!(
            response.headers().contains_key("ratelimit-remaining"),
            "GET {path} ({}) has RateLimit-Remaining",
            response.status()
        );
    }
}
