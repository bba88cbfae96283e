//! The operator console (issue 23), and the operator API it is built on.
//!
//! - The operator API: every replay and purge writes an audit row naming the
//!   operator key, a purge needs its confirmation, the overview,
//!   needs-attention and payment-story views answer only operators.
//! - The console over plain HTTP: its security headers, its cookies, and
//!   the sign-in form's own CSRF check.
//! - The console in a real headless Chromium, driven over WebDriver
//!   ([`browser`]): sign in, watch a dead letter arrive without a reload,
//!   replay it with the page's button (charged once), a form posted without
//!   its CSRF token changing nothing, a merchant key refused, the ticked
//!   ones and every match of a filter replayed, a purge only with its
//!   confirmation; a dead webhook delivery redelivered from the Webhooks
//!   page (the same `webhook-id`, audited), and not without its CSRF token.
//!   With
//!   `CONSOLE_SCREENSHOTS=docs/console` (a path from the workspace root) it
//!   also writes a screenshot of each page, the README's pictures.
//!
//! The browser tests need `chromedriver` (Debian's `chromium-driver`, which
//! `.ci/run` installs). Without it they say so and pass, unless `CI` is
//! set: there they fail.

#[path = "support/browser.rs"]
mod browser;

use std::time::Duration;

use browser::Browser;
use serde_json::{json, Value};
use testkit::receiver::Receiver;
use testkit::{Options, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_and_a_purge_are_audited_with_the_operator_key_and_a_purge_needs_confirming() {
    let app = TestApp::with(Options::one_attempt()).await;
    let ids = app.dead_letter(2).await;
    let operator = app.operator_key().await;

    // Replay one by id: it succeeds, charged once.
    let response = app
        .post_as(
            &operator,
            "/v1/admin/dead-letters/replay",
            &json!({"payment_ids": [ids[0]]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("json");
    assert_eq!(report["replayed"], json!([ids[0]]), "{report}");
    app.wait_payment(&ids[0], "the replayed payment succeeds", |p| {
        p["status"] == "succeeded"
    })
    .await;

    // A purge without its confirmation changes nothing.
    let response = app
        .post_as(
            &operator,
            "/v1/admin/dead-letters/purge",
            &json!({"confirm": false}),
        )
        .await;
    assert_eq!(response.status(), 400, "{:?}", response.text().await);
    assert_eq!(app.queue_depth("dead").await, 1, "nothing purged");

    let response = app
        .post_as(
            &operator,
            "/v1/admin/dead-letters/purge",
            &json!({"confirm": true}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("json");
    assert_eq!(report["purged"], 1, "{report}");
    assert_eq!(app.queue_depth("dead").await, 0);
    assert_eq!(
        app.payment(&ids[1]).await["status"],
        "failed",
        "stays failed"
    );

    let audit: Value = app
        .get_as(&operator, "/v1/admin/audit")
        .await
        .json()
        .await
        .expect("json");
    let rows = audit["data"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{audit}");
    // Newest first.
    assert_eq!(rows[0]["action"], "dead_letters.purge");
    assert_eq!(rows[0]["result"], "purged 1");
    assert_eq!(rows[1]["action"], "dead_letters.replay");
    assert_eq!(rows[1]["target"], ids[0].as_str());
    assert!(
        rows[1]["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("replayed 1,")),
        "{audit}"
    );
    assert_eq!(rows[0]["key_id"], rows[1]["key_id"]);
    assert!(rows[0]["key_id"].is_string(), "names the operator key");
    assert_eq!(audit["object"], "list");
    assert_eq!(audit["url"], "/v1/admin/audit");
    assert_eq!(audit["has_more"], false, "{audit}");
    // A page of one: the newest, and more after it.
    let first: Value = app
        .get_as(&operator, "/v1/admin/audit?limit=1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(first["data"].as_array().map(Vec::len), Some(1), "{first}");
    assert_eq!(first["data"][0]["action"], "dead_letters.purge");
    assert_eq!(first["has_more"], true, "{first}");
    let response = app.get_as(&operator, "/v1/admin/audit?limit=1001").await;
    assert_eq!(response.status(), 400, "operator lists stop at 1000");
    app.assert_charged_once_each(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_attention_views_answer_operators_only_and_show_every_queue() {
    let app = TestApp::with(Options::one_attempt()).await;
    app.dead_letter(1).await;
    let operator = app.operator_key().await;

    for path in [
        "/v1/admin/overview",
        "/v1/admin/attention",
        "/v1/admin/audit",
    ] {
        let response = app.get_as(&app.key, path).await;
        assert_eq!(response.status(), 403, "{path}: a merchant key is refused");
    }

    let overview: Value = app
        .eventually(
            "the worker's heartbeat in the overview",
            std::time::Duration::from_secs(10),
            || async {
                let overview: Value = app
                    .get_as(&operator, "/v1/admin/overview")
                    .await
                    .json()
                    .await
                    .expect("json");
                (overview["workers"]
                    .as_array()
                    .is_some_and(|w| !w.is_empty()))
                .then_some(overview)
            },
        )
        .await;
    let depth = |queue: String| {
        overview["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .find(|q| q["queue"] == queue.as_str())
            .map(|q| q["depth"].clone())
    };
    assert_eq!(
        depth(format!("{}.dead", app.prefix)),
        Some(json!(1)),
        "{overview}"
    );
    assert_eq!(
        depth(format!("{}.process", app.prefix)),
        Some(json!(0)),
        "{overview}"
    );
    for delay in app.options.worker.retry_delays.iter() {
        let queue = common::queue::Topology::new(&app.prefix).retry_queue(*delay);
        assert!(depth(queue.clone()).is_some(), "{queue} listed: {overview}");
    }
    assert!(
        depth(format!("{}.webhooks.dead", app.prefix)).is_some(),
        "{overview}"
    );
    let failed = overview["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .find(|s| s["status"] == "failed")
        .map(|s| s["count"].clone());
    assert_eq!(failed, Some(json!(1)), "{overview}");
    assert_eq!(
        overview["last_hour"][0]["finished"], 1,
        "the failed payment finished this hour: {overview}"
    );

    let attention: Value = app
        .get_as(&operator, "/v1/admin/attention")
        .await
        .json()
        .await
        .expect("json");
    assert!(attention["payments"].is_array(), "{attention}");
    assert!(attention["endpoints"].is_array(), "{attention}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_story_shows_its_history_and_finding_by_order_id_answers_operators_only() {
    let app = TestApp::with(Options::one_attempt()).await;
    let ids = app.dead_letter(1).await;
    let operator = app.operator_key().await;

    let response = app
        .get_as(&app.key, &format!("/v1/admin/payments/{}", ids[0]))
        .await;
    assert_eq!(response.status(), 403, "a merchant key is refused");

    let story: Value = app
        .get_as(&operator, &format!("/v1/admin/payments/{}", ids[0]))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(story["payment"]["id"], ids[0].as_str(), "{story}");
    assert_eq!(story["payment"]["status"], "failed", "{story}");
    let history = story["history"].as_array().expect("history");
    assert_eq!(
        history.first().map(|h| &h["to_status"]),
        Some(&json!("pending"))
    );
    assert_eq!(
        history.last().map(|h| &h["to_status"]),
        Some(&json!("failed"))
    );
    assert!(
        history.iter().all(|h| h["actor"].is_string()),
        "every change says who: {story}"
    );

    let found: Value = app
        .get_as(&operator, "/v1/admin/payments?order_id=order_123456")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(found["data"], json!([ids[0]]), "{found}");
    assert_eq!(found["has_more"], false, "{found}");

    let response = app
        .get_as(&operator, "/v1/admin/payments/pay_not-an-id")
        .await;
    assert_eq!(response.status(), 404);
}

/// Sign-in attempts are bounded for the whole console (each one looks a
/// key up, and a refused one writes an audit row): past the burst the form
/// answers 429 with `Retry-After`, before any lookup, and writes nothing.
/// A sign-in also removes the sessions that have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_attempts_past_the_limit_are_refused_unlooked_and_a_sign_in_prunes_expired_sessions(
) {
    let app = TestApp::api_only().await;
    let operator = app.operator_key().await;
    let client = no_redirects();
    sqlx::query(
        "INSERT INTO console_sessions (token_hash, key_id, csrf_token, expires_at)
         SELECT '\\x00'::bytea, id, 'stale', now() - interval '1 hour'
         FROM api_keys WHERE merchant_id IS NULL LIMIT 1",
    )
    .execute(&app.pool)
    .await
    .expect("an expired session");

    let response = sign_in_over_http(&app, &client, &operator).await;
    assert_eq!(response.status(), 303, "signed in");
    assert_eq!(
        app.count_where("console_sessions", "expires_at < now()")
            .await,
        0,
        "the expired session is gone"
    );
    assert_eq!(app.count_where("console_sessions", "true").await, 1);

    let mut refused_by_key = 0;
    let limited = loop {
        let response = sign_in_over_http(&app, &client, "sk_not_a_key").await;
        match response.status().as_u16() {
            401 => refused_by_key += 1,
            429 => break response,
            other => panic!("a wrong key is 401 or, past the limit, 429: {other}"),
        }
        assert!(refused_by_key < 100, "never limited");
    };
    assert!(
        refused_by_key >= 9,
        "the burst of ten (one was the good sign-in) is taken first: {refused_by_key}"
    );
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!(wait >= 1, "{wait}");
    let html = limited.text().await.expect("html");
    assert!(html.contains("Too many sign-in attempts"), "{html}");
    let audited = app
        .count_where(
            "operator_audit",
            "action = 'console.sign_in' AND result LIKE 'refused:%'",
        )
        .await;
    assert_eq!(
        audited, refused_by_key,
        "an audit row for each key looked up, none for the limited attempt"
    );
}

/// Signs in over plain HTTP (as a browser would: the sign-in page's
/// double-submit cookie and field, then the key); the session cookie's
/// `Set-Cookie` line.
async fn sign_in_over_http(
    app: &TestApp,
    client: &reqwest::Client,
    key: &str,
) -> reqwest::Response {
    let page = client
        .get(app.url("/console/sign-in"))
        .send()
        .await
        .expect("sign-in page");
    let cookie = set_cookie(&page, "console_sign_in").expect("the sign-in cookie");
    let html = page.text().await.expect("html");
    let nonce = hidden_csrf(&html).expect("the form's csrf field");
    let value = cookie_value(&cookie);
    client
        .post(app.url("/console/sign-in"))
        .header("cookie", format!("console_sign_in={value}"))
        .form(&[("csrf", nonce.as_str()), ("key", key)])
        .send()
        .await
        .expect("sign in")
}

fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map_or("", |(_, value)| value)
}

fn hidden_csrf(html: &str) -> Option<String> {
    let start = html.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_owned())
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_carry_a_strict_policy_and_the_session_cookie_is_http_only_and_strict() {
    let app = TestApp::api_only().await;
    let operator = app.operator_key().await;
    let client = no_redirects();

    // Without a session, every page sends the browser to sign in.
    let response = client.get(app.url("/console")).send().await.expect("get");
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/console/sign-in");

    let page = client
        .get(app.url("/console/sign-in"))
        .send()
        .await
        .expect("sign-in page");
    let headers = page.headers();
    let policy = headers["content-security-policy"].to_str().expect("ascii");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.expect("html");
    assert!(!html.contains("<script>"), "no inline script: {html}");
    assert!(html.contains(r#"<script src="/console/static/console.js""#));

    // The sign-in form without its double-submit cookie signs nobody in.
    let nonce = hidden_csrf(&html).expect("csrf field");
    let response = client
        .post(app.url("/console/sign-in"))
        .form(&[("csrf", nonce.as_str()), ("key", operator.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 403);
    assert!(set_cookie(&response, "console_session").is_none());

    let response = sign_in_over_http(&app, &client, &operator).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/console");
    let cookie = set_cookie(&response, "console_session").expect("a session cookie");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=3600",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain http here (PUBLIC_BASE_URL is http): {cookie}"
    );
    let session = format!("console_session={}", cookie_value(&cookie));

    let overview = client
        .get(app.url("/console"))
        .header("cookie", &session)
        .send()
        .await
        .expect("overview");
    assert_eq!(overview.status(), 200);
    let html = overview.text().await.expect("html");
    assert!(html.contains("<h1>Overview</h1>"), "{html}");
    assert!(html.contains("<svg"), "server-drawn charts: {html}");

    // A live fragment says it is one (the script checks).
    let live = client
        .get(app.url("/console/live/overview"))
        .header("cookie", &session)
        .send()
        .await
        .expect("fragment");
    assert_eq!(live.headers()["x-console-fragment"], "1");

    // Signing out ends the session: its cookie signs nobody in after.
    let csrf = hidden_csrf(&html).expect("the sign-out form's token");
    let response = client
        .post(app.url("/console/sign-out"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("sign out");
    assert_eq!(response.status(), 303);
    let response = client
        .get(app.url("/console"))
        .header("cookie", &session)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 303, "signed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_an_operator_sees_a_dead_letter_arrive_live_and_replays_it_charged_once() {
    let mut app = TestApp::with(Options::one_attempt()).await;
    let Some(browser) = Browser::start(&app.api_url).await else {
        return;
    };
    let operator = app.operator_key().await;

    browser.goto("/console").await;
    browser.wait_text("h1", "Operator console: sign in").await;
    browser.screenshot("sign-in").await;
    browser.sign_in(&operator).await;
    browser.wait_text("h1", "Overview").await;

    browser.goto("/console/dead-letters").await;
    browser.wait_text(".count", "No dead letter matches.").await;
    browser.mark_page().await;

    // A processor outage dead-letters a payment; the open page shows it
    // without a reload.
    let ids = app.dead_letter(1).await;
    let id = &ids[0];
    let row = format!(r#"tr[data-payment-id="{id}"]"#);
    browser.wait_for(&row).await;
    assert!(browser.same_page().await, "the row came without a reload");
    assert!(
        browser.text(&row).await.contains("attempts_exhausted"),
        "the row says why"
    );
    browser.screenshot("dead-letters").await;

    // A replay posted without its CSRF token (or with a wrong one), with
    // the session's own cookie, changes nothing.
    let session = browser.session_cookie().await.expect("signed in");
    let client = no_redirects();
    for form in [
        vec![("one", id.as_str())],
        vec![("one", id.as_str()), ("csrf", "not-the-token")],
        vec![("scope", "all")],
    ] {
        let response = client
            .post(app.url("/console/dead-letters/replay"))
            .header("cookie", format!("console_session={session}"))
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 403, "{form:?}");
    }
    let response = client
        .post(app.url("/console/dead-letters/purge"))
        .header("cookie", format!("console_session={session}"))
        .form(&[("confirm", "yes")])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 403);
    assert_eq!(app.queue_depth("dead").await, 1, "still dead-lettered");
    assert_eq!(app.payment(id).await["status"], "failed");
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM operator_audit WHERE action LIKE 'dead_letters.%'")
            .fetch_all(&app.pool)
            .await
            .expect("audit");
    assert!(
        actions.is_empty(),
        "nothing done, nothing audited: {actions:?}"
    );

    // The page's own button replays it.
    browser
        .click(&format!(r#"button[name="one"][value="{id}"]"#))
        .await;
    browser
        .wait_text(".notice", "Replay done: replayed 1")
        .await;
    app.wait_payment(id, "the replayed payment succeeds", |p| {
        p["status"] == "succeeded"
    })
    .await;
    app.assert_charged_once_each(1).await;

    // A few more payments, for the overview's charts.
    app.submit(testkit::cards::VISA, 8).await;
    app.wait_all_terminal(9, Duration::from_secs(30)).await;

    // Its page tells the story: the replay by this operator among it.
    browser.goto(&format!("/console/payments/{id}")).await;
    browser.wait_text("dd.status-succeeded", "succeeded").await;
    let history = browser.text("section[aria-labelledby=history]").await;
    assert!(
        history.contains("api-key:"),
        "the operator's replay: {history}"
    );
    browser.screenshot("payment").await;

    browser.goto("/console").await;
    browser.wait_text("h1", "Overview").await;
    browser.screenshot("overview").await;
    browser.goto("/console/audit").await;
    let audit = browser.text("main").await;
    assert!(audit.contains("dead_letters.replay"), "{audit}");
    assert!(audit.contains("console.sign_in"), "{audit}");
    browser.screenshot("audit").await;

    // With the workers stopped, a new payment is soon overdue: Needs
    // attention shows it, live, saying why in words, linking to it.
    browser.goto("/console/attention").await;
    browser.wait_text("h1", "Needs attention").await;
    browser.mark_page().await;
    app.stop_workers().await;
    let late = app.create_payment(testkit::cards::VISA).await;
    let row = format!(r#"tr[data-payment-id="{late}"]"#);
    browser.wait_for(&row).await;
    assert!(browser.same_page().await, "the row came without a reload");
    let why = browser.text(&row).await;
    assert!(why.contains("no worker has taken it"), "{why}");
    browser
        .wait_for(&format!(r#"{row} a[href="/console/payments/{late}"]"#))
        .await;
    browser.screenshot("attention").await;

    browser.click("form.sign-out button").await;
    browser.wait_text(".notice", "You are signed out.").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_merchant_key_cannot_sign_in_and_is_told_why() {
    let app = TestApp::api_only().await;
    let Some(browser) = Browser::start(&app.api_url).await else {
        return;
    };

    browser.goto("/console/sign-in").await;
    browser.sign_in(&app.key).await;
    browser
        .wait_text("#sign-in-error", "This is a merchant key")
        .await;
    assert!(
        browser.session_cookie().await.is_none(),
        "no session for a merchant key"
    );
    browser.goto("/console/dead-letters").await;
    browser.wait_text("h1", "Operator console: sign in").await;

    let result: String = sqlx::query_scalar(
        "SELECT result FROM operator_audit WHERE action = 'console.sign_in' AND key_id IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the refusal is audited");
    assert_eq!(result, "refused: a merchant key");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_selected_and_all_matching_are_replayed_and_a_purge_needs_its_confirmation(
) {
    let app = TestApp::with(Options::one_attempt()).await;
    let Some(browser) = Browser::start(&app.api_url).await else {
        return;
    };
    let operator = app.operator_key().await;
    let ids = app.dead_letter(3).await;
    browser.goto("/console/sign-in").await;
    browser.sign_in(&operator).await;
    browser.wait_text("h1", "Overview").await;

    // The ticked one only.
    browser.goto("/console/dead-letters").await;
    browser.wait_text(".count", "3 dead letters match").await;
    browser
        .click(&format!(r#"input[name="payment_id"][value="{}"]"#, ids[1]))
        .await;
    browser
        .click(r#"button[name="scope"][value="selected"]"#)
        .await;
    browser
        .wait_text(".notice", "Replay done: replayed 1,")
        .await;
    app.wait_payment(&ids[1], "the selected one succeeds", |p| {
        p["status"] == "succeeded"
    })
    .await;
    assert_eq!(
        app.payment(&ids[0]).await["status"],
        "failed",
        "not selected"
    );

    // Every one that matches the filter.
    browser
        .goto("/console/dead-letters?reason=attempts_exhausted")
        .await;
    browser.wait_text(".count", "2 dead letters match").await;
    browser.click(r#"button[name="scope"][value="all"]"#).await;
    browser
        .wait_text(".notice", "Replay done: replayed 2,")
        .await;
    for id in [&ids[0], &ids[2]] {
        app.wait_payment(id, "every match succeeds", |p| p["status"] == "succeeded")
            .await;
    }
    app.assert_charged_once_each(3).await;
    let target: String = sqlx::query_scalar(
        "SELECT target FROM operator_audit WHERE action = 'dead_letters.replay' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("audited");
    assert!(
        target.starts_with("every match of reason attempts_exhausted (2)"),
        "{target}"
    );

    // A purge posted without its confirmation purges nothing; with it, all.
    app.set_faults(json!({"outage": true})).await;
    let late = app.submit(testkit::cards::VISA, 1).await;
    app.wait_all_terminal(4, Duration::from_secs(60)).await;
    app.wait_queue_depth("dead", 1).await;
    app.set_faults(json!({"outage": false})).await;
    browser.goto("/console/dead-letters/purge").await;
    browser.wait_text("main", "1 now").await;
    browser.screenshot("purge").await;
    let csrf = browser.attr(r#"input[name="csrf"]"#, "value").await;
    let session = browser.session_cookie().await.expect("signed in");
    let response = no_redirects()
        .post(app.url("/console/dead-letters/purge"))
        .header("cookie", format!("console_session={session}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    assert_eq!(app.queue_depth("dead").await, 1, "nothing purged");
    browser.click("#confirm").await;
    browser.click("button.danger").await;
    browser.wait_text(".notice", "Purge done: purged 1").await;
    assert_eq!(app.queue_depth("dead").await, 0);
    assert_eq!(
        app.payment(&late[0]).await["status"],
        "failed",
        "stays failed"
    );
    browser.close().await;
}

/// A receiver answering 500 until told otherwise, an endpoint of this
/// test's merchant sending it `payment.succeeded`, and a payment whose
/// event's delivery dies (three attempts: the two test retry tiers and the
/// first); the receiver and the event's id (`evt_…`).
async fn a_dead_webhook_delivery(app: &TestApp) -> (Receiver, String) {
    let receiver = Receiver::start().await;
    receiver.answer(&[500; 20]);
    app.register_webhook(&receiver.url(), &["payment.succeeded"])
        .await;
    app.create_payment(testkit::cards::VISA).await;
    app.wait_count_where(
        "the webhook delivery to die",
        "webhook_deliveries",
        "status = 'dead'",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(receiver.got().len(), 3, "three attempts, each answered 500");
    let event: String = sqlx::query_scalar(
        "SELECT 'evt_' || id::text FROM events WHERE type = 'payment.succeeded'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("the event");
    (receiver, event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_posted_without_its_csrf_token_changes_nothing() {
    let app = TestApp::spawn().await;
    let operator = app.operator_key().await;
    let (receiver, event) = a_dead_webhook_delivery(&app).await;
    let client = no_redirects();
    let response = sign_in_over_http(&app, &client, &operator).await;
    let cookie = set_cookie(&response, "console_session").expect("a session cookie");
    let session = format!("console_session={}", cookie_value(&cookie));

    let page = client
        .get(app.url("/console/webhooks"))
        .header("cookie", &session)
        .send()
        .await
        .expect("the webhooks page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains(&event), "the dead delivery is listed: {html}");
    let delivery: String =
        sqlx::query_scalar("SELECT id::text FROM webhook_deliveries WHERE status = 'dead'")
            .fetch_one(&app.pool)
            .await
            .expect("the dead delivery");

    for form in [
        vec![("one", delivery.as_str())],
        vec![("one", delivery.as_str()), ("csrf", "not-the-token")],
        vec![("scope", "all")],
    ] {
        let response = client
            .post(app.url("/console/webhooks/redeliver"))
            .header("cookie", &session)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 403, "{form:?}");
    }
    assert_eq!(app.count("webhook_deliveries").await, 1, "no new delivery");
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM operator_audit WHERE action LIKE 'webhooks.%'")
            .fetch_all(&app.pool)
            .await
            .expect("audit");
    assert!(
        actions.is_empty(),
        "nothing done, nothing audited: {actions:?}"
    );
    assert_eq!(
        app.count_where("webhook_deliveries", "status = 'dead'")
            .await,
        1,
        "still dead"
    );

    // The operator API behind the page: operators only, a selection
    // required.
    for response in [
        app.get_as(&app.key, "/v1/admin/webhook-deliveries/dead")
            .await,
        app.post_as(
            &app.key,
            "/v1/admin/webhook-deliveries/redeliver",
            &json!({"all": true}),
        )
        .await,
    ] {
        assert_eq!(response.status(), 403, "a merchant key is refused");
    }
    let response = app
        .post_as(
            &operator,
            "/v1/admin/webhook-deliveries/redeliver",
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), 400, "nothing selected");
    let list: Value = app
        .get_as(&operator, "/v1/admin/webhook-deliveries/dead")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(list["data"][0]["id"], delivery.as_str(), "{list}");
    assert_eq!(list["data"][0]["event_id"], event.as_str(), "{list}");
    assert_eq!(list["data"][0]["last_status_code"], 500, "{list}");
    assert_eq!(list["data"][0]["attempts"], 3, "{list}");
    assert_eq!(app.count("webhook_deliveries").await, 1, "still one");
    drop(receiver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_a_dead_webhook_delivery_is_redelivered_with_its_webhook_id_and_audited() {
    let app = TestApp::spawn().await;
    let Some(browser) = Browser::start(&app.api_url).await else {
        return;
    };
    let operator = app.operator_key().await;
    let (receiver, event) = a_dead_webhook_delivery(&app).await;

    browser.goto("/console/sign-in").await;
    browser.sign_in(&operator).await;
    browser.wait_text("h1", "Overview").await;
    browser.goto("/console/webhooks").await;
    browser.wait_text("h1", "Webhooks").await;
    let row = format!(r#"tr[data-event-id="{event}"]"#);
    browser.wait_for(&row).await;
    let shown = browser.text(&row).await;
    for what in [
        "payment.succeeded",
        receiver.url().as_str(),
        "failed (HTTP 500)",
        "pay_",
    ] {
        assert!(shown.contains(what), "{what} in the row: {shown}");
    }
    browser
        .wait_text(".count", "1 dead delivery matches.")
        .await;
    browser.screenshot("webhooks").await;

    // The receiver is back; the row's button sends the event again.
    receiver.state.script.lock().expect("lock").clear();
    browser.click(&format!(r#"{row} button[name="one"]"#)).await;
    browser
        .wait_text(".notice", "Redelivery done: redelivered 1, not sent 0")
        .await;
    let got = receiver
        .wait_for(&app, "the redelivery", |got| got.len() == 4)
        .await;
    assert_eq!(got[3].id(), event, "the same webhook-id");
    assert_eq!(got[3].body, got[0].body, "the same body");
    app.wait_count_where(
        "the new delivery to be delivered",
        "webhook_deliveries",
        "status = 'delivered'",
        1,
        Duration::from_secs(10),
    )
    .await;
    browser
        .wait_text(".count", "No dead delivery matches.")
        .await;

    let (action, target, result): (String, String, String) = sqlx::query_as(
        "SELECT action, target, result FROM operator_audit WHERE action LIKE 'webhooks.%'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("audited");
    assert_eq!(action, "webhooks.redeliver");
    assert!(target.starts_with("delivery "), "{target}");
    assert_eq!(result, "redelivered 1, not sent 0");
    browser.goto("/console/audit").await;
    let audit = browser.text("main").await;
    assert!(audit.contains("webhooks.redeliver"), "{audit}");
    browser.close().await;
}
