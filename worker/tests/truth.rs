//! A payment's status never says something untrue about money (issue
//! "Never lie about money"): unknown outcomes are reconciled with the
//! processor, a dead worker's payments come back in seconds, a
//! misconfiguration holds a payment instead of failing it, and a busy
//! database never turns a healthy payment into a dead letter. Every fault is
//! caused for real.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::cards;
use testkit::{Options, TestApp};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker");

/// How many times the payment was ever `failed`, from its history (which
/// records every transition, so a `failed` that was later undone still
/// shows).
async fn times_failed(app: &TestApp, id: &str) -> i64 {
    let uuid = id.trim_start_matches("pay_");
    sqlx::query_scalar(
        "SELECT count(*) FROM payment_status_history
         WHERE payment_id = $1::uuid AND to_status = 'failed'",
    )
    .bind(uuid)
    .fetch_one(&app.pool)
    .await
    .expect("history")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_answer_was_lost_is_never_failed_and_succeeds_once_the_processor_answers() {
    let app = TestApp::spawn().await;
    let settings = app.worker_settings();
    // The processor charges, then holds its answer past the worker's
    // timeout: the outcome is unknown.
    app.set_faults(json!({"timeout_rate": 1.0})).await;
    let id = app.create_payment(cards::VISA).await;
    let waiting = wait_last_error(&app, &id, "the outcome marked unknown", "outcome unknown").await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(
        waiting["processor_response"]["approved"],
        json!(null),
        "nothing claimed about the card: {waiting}"
    );

    // Then an outage longer than every attempt: lookups and charges all get
    // 503 while the worker keeps asking.
    app.set_faults(json!({"timeout_rate": 0.0, "outage": true}))
        .await;
    let beyond = i64::from(settings.max_attempts) + 3;
    app.eventually(
        "more attempts than MAX_ATTEMPTS",
        Duration::from_secs(60),
        || async {
            let payment = app.payment(&id).await;
            (payment["attempts"].as_i64() >= Some(beyond)).then_some(())
        },
    )
    .await;
    let during = app.payment(&id).await;
    assert_ne!(during["status"], "failed", "{during}");
    assert!(
        during["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("outcome unknown")),
        "{during}"
    );
    assert_eq!(app.queue_depth("dead").await, 0, "nothing dead-lettered");

    // The processor returns: the lookup finds the charge, with no operator.
    app.set_faults(json!({"outage": false})).await;
    app.wait_all_terminal(1, Duration::from_secs(30)).await;
    let done = app.payment(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["processor_response"]["approved"], true, "{done}");
    assert_eq!(times_failed(&app, &id).await, 0, "never reported failed");
    let stats = app.sim_stats().await;
    assert_eq!(stats.charges, 1, "{stats:?}");
    assert_eq!(stats.duplicate_charges, 0, "{stats:?}");
    assert!(stats.lookups >= 1, "the worker asked: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_before_any_charge_is_failed_as_not_processed_because_that_is_known() {
    let app = TestApp::with(Options::max_attempts(2)).await;
    app.set_faults(json!({"outage": true})).await;
    let id = app.create_payment(cards::VISA).await;
    app.wait_all_terminal(1, Duration::from_secs(30)).await;
    let payment = app.payment(&id).await;
    assert_eq!(payment["status"], "failed", "{payment}");
    assert_eq!(payment["failure_code"], "processor_unavailable");
    assert_eq!(app.sim_stats().await.charges, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_payments_are_terminal_within_seconds_and_charged_once() {
    // Default settings (lease, heartbeats, rescuer, retry tiers), but enough
    // concurrency that the two workers hold every payment at once.
    let mut worker =
        worker::Settings::clone(&<worker::Config as clap::Parser>::parse_from(["worker"]).settings);
    worker.concurrency = 100;
    // The one setting without a default: the test systems' key.
    worker.secrets_key = testkit::fast_worker_settings().secrets_key;
    let app = TestApp::with(Options {
        worker,
        ..Options::api_only()
    })
    .await;
    app.set_faults(json!({"latency_ms": 400})).await;
    app.submit(cards::VISA, 150).await;
    // The doomed worker takes a full window of calls; the second starts
    // beside it, and the first dies holding them.
    let mut doomed = app.worker_command(WORKER_BIN).spawn().expect("spawn");
    app.eventually("calls in flight", Duration::from_secs(30), || async {
        (app.count_status("processing").await >= 50).then_some(())
    })
    .await;
    let doomed_id: String = sqlx::query_scalar("SELECT id FROM workers")
        .fetch_one(&app.pool)
        .await
        .expect("the one worker so far");
    let mut survivor = app.worker_command(WORKER_BIN).spawn().expect("spawn");
    testkit::sigkill(&doomed);
    let killed_at = Instant::now();
    doomed.wait().await.expect("reaped");
    let held_by_the_dead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payments WHERE status = 'processing' AND claimed_by = $1",
    )
    .bind(&doomed_id)
    .fetch_one(&app.pool)
    .await
    .expect("count");

    app.wait_all_terminal(150, Duration::from_secs(60)).await;
    let recovery = killed_at.elapsed();
    println!(
        "recovery: every payment terminal {:.1} s after the SIGKILL ({held_by_the_dead} were held by the killed worker)",
        recovery.as_secs_f64()
    );
    assert!(held_by_the_dead > 0, "the killed worker held payments");
    assert!(
        recovery <= Duration::from_secs(15),
        "every payment of the dead worker terminal within 15 s, took {recovery:?}"
    );
    assert_eq!(app.count_status("succeeded").await, 150);
    let stats = app.sim_stats().await;
    assert_eq!(stats.charges, 150, "{stats:?}");
    assert_eq!(stats.duplicate_charges, 0, "{stats:?}");
    testkit::sigterm(&survivor);
    assert!(survivor.wait().await.expect("exit").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_processor_url_holds_the_payment_and_a_replay_after_the_fix_charges_it_once() {
    let mut app = TestApp::with(Options {
        workers: 0,
        ..Options::max_attempts(2)
    })
    .await;
    let right_url = app.sim_url.clone();
    // A wrong path on the right host: the processor answers 404.
    app.sim_url = format!("{right_url}/wrong-prefix");
    app.start_worker().await;
    app.sim_url = right_url;
    let id = app.create_payment(cards::VISA).await;
    let held = wait_last_error(&app, &id, "the payment held", "held for an operator").await;
    assert_eq!(held["status"], "pending", "not failed: {held}");
    assert!(
        held["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("404"),
        "{held}"
    );
    app.wait_queue_depth("dead", 1).await;
    assert_eq!(app.dead_reasons().await[0], "processor_rejected");
    // Held payments are not re-sent by the rescuer behind the operator's back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.payment(&id).await["status"], "pending");
    assert_eq!(
        app.sim_stats().await.requests,
        0,
        "nothing reached the processor"
    );

    // Fix the configuration, replay.
    app.stop_workers().await;
    app.start_worker().await;
    let config = app.worker_config(&["dlq", "replay", "--all"]);
    worker::cli::run(config).await.expect("replay");
    app.wait_all_terminal(1, Duration::from_secs(30)).await;
    assert_eq!(app.payment(&id).await["status"], "succeeded");
    assert_eq!(times_failed(&app, &id).await, 0);
    let stats = app.sim_stats().await;
    assert_eq!(stats.charges, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_timeout_is_waited_out_and_never_makes_a_dead_letter() {
    let mut app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    // Hold the payments table; the worker's statements give up after 100 ms.
    let holder = app
        .hold_lock("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
        .await;
    let url = format!("{}?options=-c%20lock_timeout%3D100", app.database_url);
    app.start_worker_on(url).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    holder.rollback().await.expect("release");

    app.wait_all_terminal(1, Duration::from_secs(30)).await;
    assert_eq!(app.payment(&id).await["status"], "succeeded");
    assert_eq!(times_failed(&app, &id).await, 0);
    assert_eq!(app.queue_depth("dead").await, 0, "no dead letter");
    assert_eq!(app.sim_stats().await.charges, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescuer_pass_leaves_a_backlog_alone_and_rescues_messages_that_were_really_lost() {
    let app = TestApp::api_only().await;
    app.submit(cards::VISA, 3).await;
    // Their messages wait in the queue (a backlog), and they look long
    // overdue.
    app.wait_queue_depth("process", 3).await;
    sqlx::query("UPDATE payments SET due_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .expect("age them");
    let ctx = app.worker_context().await;
    let rescued = worker::rescuer::rescue_once(&ctx).await.expect("pass");
    assert_eq!(rescued, 0, "payments waiting in a backlog are not re-sent");
    assert_eq!(app.queue_depth("process").await, 3, "no duplicates queued");

    // Now the messages are really lost.
    app.purge("process").await;
    let rescued = worker::rescuer::rescue_once(&ctx).await.expect("pass");
    assert_eq!(rescued, 3, "lost messages are re-sent");
    app.wait_queue_depth("process", 3).await;
    ctx.broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_whose_worker_died_mid_call_is_held_not_failed() {
    let mut app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    // A worker died mid-call: the payment is `processing` under a claim
    // whose lease ended and whose worker is gone. Its job kept killing
    // workers: the broker counted many deliveries.
    sqlx::query(
        "UPDATE payments SET status = 'processing', attempts = 1, claimed_by = 'worker:gone',
                lease_expires_at = now() - interval '1 second'",
    )
    .execute(&app.pool)
    .await
    .expect("simulate the dead claim");
    app.purge("process").await;
    let broker = app.broker().await;
    let merchant: uuid::Uuid = sqlx::query_scalar("SELECT merchant_id FROM payments")
        .fetch_one(&app.pool)
        .await
        .expect("merchant");
    let job = common::queue::Job::process_payment(id.parse().expect("id"), merchant);
    broker
        .publish(
            common::queue::Topology::PROCESS_KEY,
            &job.to_bytes(),
            common::queue::headers::build(&[("x-delivery-count", common::queue::headers::int(15))]),
            None,
        )
        .await
        .expect("publish the poison job");
    app.start_worker().await;
    let held = wait_last_error(&app, &id, "the payment held", "held for an operator").await;
    assert_eq!(held["status"], "pending", "{held}");
    assert_eq!(times_failed(&app, &id).await, 0, "never failed");
    let unknown: bool =
        sqlx::query_scalar("SELECT outcome_unknown_since IS NOT NULL FROM payments")
            .fetch_one(&app.pool)
            .await
            .expect("flag");
    assert!(unknown, "the outcome is marked unknown");
    assert_eq!(app.dead_reasons().await, ["redelivered_too_often"]);

    // The operator replays: the worker asks the processor first (nothing
    // there), then charges once.
    worker::cli::run(app.worker_config(&["dlq", "replay", "--all"]))
        .await
        .expect("replay");
    app.wait_all_terminal(1, Duration::from_secs(30)).await;
    assert_eq!(app.payment(&id).await["status"], "succeeded");
    let stats = app.sim_stats().await;
    assert_eq!(stats.charges, 1, "{stats:?}");
    assert!(stats.lookups >= 1, "asked before charging: {stats:?}");
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_row_printed_with_debug_never_shows_its_card_token() {
    let app = TestApp::api_only().await;
    let id = app.create_payment("tok_secret_4242").await;
    let row = common::db::payments::find(&app.pool, id.parse().expect("id"))
        .await
        .expect("read")
        .expect("the payment");
    assert_eq!(row.card_token.expose(), "tok_secret_4242");
    let printed = format!("{row:?}");
    assert!(!printed.contains("tok_secret"), "{printed}");
    assert!(printed.contains("CardToken(<redacted>)"), "{printed}");
}

/// The payment once its `last_error` starts with `prefix`, waited for up to
/// 20 s (`what` names the wait in the failure message).
async fn wait_last_error(app: &TestApp, id: &str, what: &str, prefix: &str) -> Value {
    app.eventually(what, Duration::from_secs(20), || async {
        let payment = app.payment(id).await;
        payment["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with(prefix))
            .then_some(payment)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_row_the_domain_rejects_is_never_charged_and_its_job_is_dead_lettered_with_the_read_error(
) {
    let mut app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let id = app.create_payment(cards::VISA).await;
    // `XYZ` passes the schema's check but is no ISO 4217 currency: a
    // hand-made fix gone wrong. Every read of the row fails to decode.
    sqlx::query("UPDATE payments SET currency = 'XYZ'")
        .execute(&app.pool)
        .await
        .expect("corrupt the row");
    app.start_worker().await;
    app.wait_queue_depth("dead", 1).await;
    let broker = app.broker().await;
    let letters = common::dead_letters::list(&broker, 10)
        .await
        .expect("list dead letters");
    broker.close().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason.as_str(), "redelivered_too_often");
    let error = letters[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("the payment cannot be read"), "{error}");
    assert!(error.contains("currency"), "{error}");
    let stats = app.sim_stats().await;
    assert_eq!(
        stats.charges, 0,
        "nothing charged on a row nobody can read: {stats:?}"
    );

    // The operator mends the row and replays: charged once.
    sqlx::query("UPDATE payments SET currency = 'USD'")
        .execute(&app.pool)
        .await
        .expect("mend the row");
    worker::cli::run(app.worker_config(&["dlq", "replay", "--all"]))
        .await
        .expect("replay");
    app.wait_all_terminal(1, Duration::from_secs(60)).await;
    assert_eq!(app.payment(&id).await["status"], "succeeded");
    app.assert_charged_once_each(1).await;
}
