//! Operating the system: scaling out, draining on SIGTERM, metrics, and the
//! dead-letter tooling over the CLI and HTTP.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use testkit::cards;
use testkit::{Options, TestApp};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker");

/// Finished payments per worker, from the history.
async fn per_worker(app: &TestApp) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT actor, count(*) FROM payment_status_history
         WHERE to_status IN ('succeeded', 'failed') GROUP BY actor ORDER BY actor",
    )
    .fetch_all(&app.pool)
    .await
    .expect("per worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_share_three_hundred_payments_without_coordination() {
    let mut settings = testkit::fast_worker_settings();
    settings.concurrency = 4;
    let app = TestApp::with(Options {
        worker: settings,
        ..Options::api_only()
    })
    .await;
    // A little latency so no single process can drain the queue alone.
    app.set_faults(json!({"latency_ms": 20})).await;
    let mut workers: Vec<_> = (0..3)
        .map(|_| {
            app.worker_command(WORKER_BIN)
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    app.submit(cards::VISA, 300).await;
    let counts = app.wait_all_terminal(300, Duration::from_secs(180)).await;
    assert_eq!(counts.get("succeeded"), Some(&300), "{counts:?}");
    let shares = per_worker(&app).await;
    assert_eq!(
        shares.len(),
        3,
        "each of the three processes processed a part: {shares:?}"
    );
    assert!(shares.iter().all(|(_, n)| *n > 0));
    assert_eq!(shares.iter().map(|(_, n)| n).sum::<i64>(), 300);
    let stats = app.sim_stats().await;
    assert_eq!((stats.charges, stats.duplicate_charges), (300, 0));
    for worker in &mut workers {
        testkit::sigterm(worker);
        assert!(worker.wait().await.expect("exit").success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_worker_finish_its_in_flight_payments_and_exit_zero() {
    let mut settings = testkit::fast_worker_settings();
    settings.concurrency = 16;
    settings.processor_timeout = Duration::from_secs(5);
    settings.lease = Duration::from_secs(20);
    settings.shutdown_timeout = Duration::from_secs(20);
    let app = TestApp::with(Options {
        worker: settings,
        ..Options::api_only()
    })
    .await;
    app.set_faults(json!({"latency_ms": 2000})).await;
    let mut worker = app
        .worker_command(WORKER_BIN)
        .spawn()
        .expect("spawn worker");
    app.submit(cards::VISA, 10).await;
    app.eventually("10 payments in flight", Duration::from_secs(30), || async {
        (app.count_status("processing").await == 10).then_some(())
    })
    .await;
    testkit::sigterm(&worker);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("the worker exits within its shutdown timeout")
        .expect("wait");
    assert!(status.success(), "exit 0 after draining: {status}");
    // Everything was finished by that worker before it left: no redelivery.
    let counts = app.status_counts().await;
    assert_eq!(counts.get("succeeded"), Some(&10), "{counts:?}");
    let max_attempts: i32 = sqlx::query_scalar("SELECT max(attempts) FROM payments")
        .fetch_one(&app.pool)
        .await
        .expect("attempts");
    assert_eq!(max_attempts, 1, "no payment needed a second claim");
    assert_eq!(per_worker(&app).await.len(), 1);
    assert_eq!(app.queue_depth("process").await, 0);
}

async fn scrape(app: &TestApp, url: &str) -> String {
    let response = app.http.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

/// The value of a metric line (`name{labels} value`), if present.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|line| {
            line.starts_with(name_and_labels) && line[name_and_labels.len()..].starts_with(' ')
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_the_api_and_the_worker_move_with_the_work() {
    let app = TestApp::with(Options {
        workers: 0,
        ..Options::max_attempts(2)
    })
    .await;
    let port = testkit::free_port();
    let mut worker = app
        .worker_command(WORKER_BIN)
        .env("METRICS_BIND", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("spawn worker");
    let worker_metrics = format!("http://127.0.0.1:{port}/metrics");
    app.eventually(
        "the worker's metrics endpoint",
        Duration::from_secs(30),
        || async {
            app.http
                .get(&worker_metrics)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        },
    )
    .await;
    let before = scrape(&app, &worker_metrics).await;
    assert_eq!(metric(&before, "payments_worker_in_flight"), Some(0.0));

    app.submit(cards::VISA, 5).await;
    app.submit(cards::DECLINED, 1).await;
    app.wait_all_terminal(6, Duration::from_secs(30)).await;
    app.set_faults(json!({"outage": true})).await;
    app.submit(cards::VISA, 1).await;
    app.wait_all_terminal(7, Duration::from_secs(30)).await;

    let text = scrape(&app, &worker_metrics).await;
    assert_eq!(
        metric(
            &text,
            r#"payments_worker_payments_finished_total{outcome="succeeded"}"#
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"payments_worker_payments_finished_total{outcome="declined"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"payments_worker_payments_finished_total{outcome="dead_lettered"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "payments_worker_dead_letters_total"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "payments_worker_retries_total"), Some(1.0));
    assert_eq!(
        metric(&text, "payments_worker_payment_latency_seconds_count"),
        Some(7.0)
    );
    assert!(
        metric(
            &text,
            r#"payments_worker_processor_call_seconds_count{outcome="approved"}"#
        ) >= Some(5.0)
    );
    assert!(
        metric(
            &text,
            r#"payments_worker_processor_call_seconds_count{outcome="transient"}"#
        ) >= Some(2.0)
    );
    let dead_queue = format!(
        r#"payments_worker_queue_depth{{queue="{}.dead"}}"#,
        app.prefix
    );
    assert_eq!(metric(&text, &dead_queue), Some(1.0), "{text}");

    let api = scrape(&app, &format!("{}/metrics", app.api_url)).await;
    assert_eq!(
        metric(&api, "payments_api_payments_accepted_total"),
        Some(7.0),
        "{api}"
    );
    assert_eq!(metric(&api, "payments_api_outbox_backlog"), Some(0.0));
    let process_queue = format!(
        r#"payments_api_queue_depth{{queue="{}.process"}}"#,
        app.prefix
    );
    assert_eq!(metric(&api, &process_queue), Some(0.0), "{api}");

    let ready = app
        .http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    testkit::sigterm(&worker);
    assert!(worker.wait().await.expect("exit").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_and_replay_dead_letters_over_http_and_other_keys_get_403() {
    let app = TestApp::with(Options::one_attempt()).await;
    let ids = app.dead_letter(3).await;
    let admin = app.operator_key().await;
    let list_url = "/v1/admin/dead-letters";
    let replay_url = "/v1/admin/dead-letters/replay";

    let response = app.get_as(&app.key, list_url).await;
    assert_eq!(response.status(), 403, "payments keys are not operators");
    let response = app
        .post_as(&app.key, replay_url, &json!({"all": true}))
        .await;
    assert_eq!(response.status(), 403);

    let (_, listed) = app.call(&admin, Method::GET, list_url, None, &[]).await;
    let data = listed["data"].as_array().expect("data");
    assert_eq!(data.len(), 3, "{listed}");
    assert!(data.iter().all(|l| l["reason"] == "attempts_exhausted"
        && l["attempts"] == 1
        && l["last_error"].as_str().is_some_and(|e| e.contains("503"))
        && l["dead_lettered_at"].is_string()
        && l["merchant_id"].is_string()));

    let bad = app
        .post_as(
            &admin,
            replay_url,
            &json!({"all": true, "payment_ids": [ids[0]]}),
        )
        .await;
    assert_eq!(bad.status(), 400, "all and ids together are ambiguous");

    let (_, one) = app
        .call(
            &admin,
            Method::POST,
            replay_url,
            Some(json!({"payment_ids": [ids[0]]})),
            &[],
        )
        .await;
    assert_eq!(one["replayed"], json!([ids[0]]), "{one}");
    assert_eq!(one["kept"], 2);
    let (_, rest) = app
        .call(
            &admin,
            Method::POST,
            replay_url,
            Some(json!({"all": true})),
            &[],
        )
        .await;
    assert_eq!(rest["replayed"].as_array().map(Vec::len), Some(2), "{rest}");
    let counts = app.wait_all_terminal(3, Duration::from_secs(30)).await;
    assert_eq!(counts.get("succeeded"), Some(&3), "{counts:?}");
    assert_eq!(app.queue_depth("dead").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_cli_lists_as_json_filters_replays_and_purges_with_history() {
    let app = TestApp::with(Options::one_attempt()).await;
    let ids = app.dead_letter(3).await;
    let run = |args: &[&str]| {
        let mut command = app.worker_command(WORKER_BIN);
        command.args(args);
        async move { command.output().await.expect("run worker dlq") }
    };

    let listed = run(&["dlq", "list", "--json"]).await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let letters: Value = serde_json::from_slice(&listed.stdout).expect("JSON output");
    assert_eq!(letters.as_array().map(Vec::len), Some(3));
    let table = run(&["dlq", "list"]).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains(&ids[1])
            && table.contains("attempts_exhausted")
            && table.contains("3 dead letter(s)"),
        "{table}"
    );
    assert_eq!(app.queue_depth("dead").await, 3, "listing consumed nothing");

    // Filters: nothing is a day old, and no dead letter has this reason.
    let aged = run(&["dlq", "replay", "--all", "--older-than", "1d"]).await;
    assert!(String::from_utf8_lossy(&aged.stdout).contains("0 replayed, 0 dropped, 3 left"));
    let other = run(&["dlq", "replay", "--all", "--reason", "undecodable"]).await;
    assert!(String::from_utf8_lossy(&other.stdout).contains("0 replayed"));

    let one = run(&["dlq", "replay", &ids[0]]).await;
    assert!(one.status.success());
    assert!(String::from_utf8_lossy(&one.stdout).contains("1 replayed, 0 dropped, 2 left"));

    let refused = run(&["dlq", "purge"]).await;
    assert!(!refused.status.success(), "purge needs --yes");
    assert_eq!(app.queue_depth("dead").await, 2);
    let purged = run(&["dlq", "purge", "--yes"]).await;
    assert!(String::from_utf8_lossy(&purged.stdout).contains("purged 2"));
    assert_eq!(app.queue_depth("dead").await, 0);

    let counts = app.wait_all_terminal(3, Duration::from_secs(30)).await;
    assert_eq!(
        (counts.get("succeeded"), counts.get("failed")),
        (Some(&1), Some(&2)),
        "{counts:?}"
    );
    let history = common::db::payments::history(&app.pool, ids[2].parse().expect("id"))
        .await
        .expect("history");
    assert!(
        history.iter().any(|h| h.actor.starts_with("operator:")
            && h.reason.as_deref().is_some_and(|r| r.contains("purged"))),
        "the purge is in the payment's history: {history:?}"
    );
}
