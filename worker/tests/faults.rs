//! Every failure path of DESIGN.md §3 on the worker side, each caused for
//! real (processes killed, connections cut, the simulator failing), then the
//! invariants checked: nothing lost, nothing charged twice, every payment
//! terminal or dead-lettered.

use std::time::Duration;

use common::queue::{headers, Topology};
use serde_json::json;
use testkit::cards;
use testkit::{Options, TestApp};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker");

async fn total_attempts(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(sum(attempts), 0)::bigint FROM payments")
        .fetch_one(&app.pool)
        .await
        .expect("attempts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_timeouts_from_the_processor_are_retried_until_every_payment_succeeds_once() {
    let mut worker = testkit::fast_worker_settings();
    worker.max_attempts = 12;
    worker.processor_timeout = Duration::from_millis(400);
    worker.lease = Duration::from_secs(4);
    let app = TestApp::with(Options {
        workers: 2,
        worker,
        ..Options::default()
    })
    .await;
    app.set_faults(json!({"error_rate": 0.4, "timeout_rate": 0.1}))
        .await;
    app.submit(cards::VISA, 100).await;
    let counts = app.wait_all_terminal(100, Duration::from_secs(180)).await;
    assert_eq!(counts.get("succeeded"), Some(&100), "{counts:?}");
    app.assert_charged_once_each(100).await;
    let stats = app.sim_stats().await;
    assert!(
        stats.lookups > 0,
        "unknown outcomes (timeouts, 500s) were resolved by asking the processor about the key: {stats:?}"
    );
    assert!(
        total_attempts(&app).await > 100,
        "faults caused retries through the delay queues"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_call_loses_nothing_and_charges_nothing_twice() {
    let mut worker = testkit::fast_worker_settings();
    worker.concurrency = 32;
    let app = TestApp::with(Options {
        worker,
        ..Options::api_only()
    })
    .await;
    app.set_faults(json!({"latency_ms": 400})).await;
    // A backlog first, so the worker holds a full window of calls at once
    // however fast this machine submits.
    app.submit(cards::VISA, 120).await;
    let mut first = app
        .worker_command(WORKER_BIN)
        .spawn()
        .expect("spawn worker");
    // Kill it while it holds a full window of calls to the processor.
    app.eventually("calls in flight", Duration::from_secs(30), || async {
        (app.count_status("processing").await >= 16).then_some(())
    })
    .await;
    testkit::sigkill(&first);
    first.wait().await.expect("reaped");

    let mut second = app
        .worker_command(WORKER_BIN)
        .spawn()
        .expect("spawn replacement");
    let counts = app.wait_all_terminal(120, Duration::from_secs(120)).await;
    assert_eq!(counts.get("succeeded"), Some(&120), "{counts:?}");
    app.assert_charged_once_each(120).await;
    let reclaimed = app.count_where("payments", "attempts > 1").await;
    assert!(
        reclaimed > 0,
        "payments held by the killed worker were claimed again after their lease"
    );
    testkit::sigterm(&second);
    assert!(second.wait().await.expect("exit").success());
}

/// A worker records its outcomes in batches, one statement for the approvals
/// of many payments. Killed with its outcomes half recorded (the fast
/// payments' statements committed, the statement of a slow one blocked by a
/// row lock this test holds, so it never commits), it leaves each payment
/// recorded exactly once: what committed stands, and the rest is taken over
/// by the next worker, which asks the processor and charges nothing twice.
/// (A statement the dead worker had sent may still commit after its death;
/// the test ends that connection, as a lost host's would end, to see the
/// takeover.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_its_outcomes_half_recorded_records_each_payment_once() {
    let mut worker = testkit::fast_worker_settings();
    worker.concurrency = 64;
    worker.processor_timeout = Duration::from_secs(10);
    worker.lease = Duration::from_secs(40);
    let app = TestApp::with(Options {
        worker,
        ..Options::api_only()
    })
    .await;
    let (slow, fast) = (10, 30);
    app.set_faults(json!({"latency_ms": 4000})).await;
    let mut first = app
        .worker_command(WORKER_BIN)
        .spawn()
        .expect("spawn worker");
    app.submit(cards::VISA, slow).await;
    app.eventually(
        "the slow payments at the processor",
        Duration::from_secs(30),
        || async { (app.count_status("processing").await == slow as i64).then_some(()) },
    )
    .await;
    // One slow payment's row, locked: its approval cannot be recorded.
    let mut lock = app.pool.begin().await.expect("begin");
    let locked: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM payments ORDER BY id LIMIT 1 FOR UPDATE")
            .fetch_one(&mut *lock)
            .await
            .expect("lock a slow payment");
    app.set_faults(json!({"latency_ms": 0})).await;
    app.submit(cards::VISA, fast).await;
    app.eventually(
        "the fast payments recorded",
        Duration::from_secs(60),
        || async { (app.count_status("succeeded").await >= fast as i64).then_some(()) },
    )
    .await;
    app.eventually("every call answered", Duration::from_secs(60), || async {
        (app.sim_stats().await.charges == (slow + fast) as u64).then_some(())
    })
    .await;
    app.eventually(
        "a record statement waiting for the lock",
        Duration::from_secs(30),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&app.pool)
            .await
            .expect("pg_stat_activity");
            (waiting > 0).then_some(())
        },
    )
    .await;
    testkit::sigkill(&first);
    first.wait().await.expect("reaped");
    let recorded = app.count_status("succeeded").await;
    assert!(
        recorded >= fast as i64 && recorded < (slow + fast) as i64,
        "killed with some outcomes committed and others not: {recorded} of {} recorded",
        slow + fast
    );
    // The dead worker's blocked statement would still commit once the lock
    // is released (PostgreSQL notices a vanished client only when it
    // answers): end its connection first, as a crashed host's would end.
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("end the dead worker's connection");
    assert!(!ended.is_empty() && ended.iter().all(|&e| e), "{ended:?}");
    lock.rollback().await.expect("release the lock");

    let mut second = app
        .worker_command(WORKER_BIN)
        .spawn()
        .expect("spawn replacement");
    let counts = app
        .wait_all_terminal((slow + fast) as i64, Duration::from_secs(120))
        .await;
    assert_eq!(
        counts.get("succeeded"),
        Some(&((slow + fast) as i64)),
        "{counts:?}"
    );
    app.assert_charged_once_each((slow + fast) as u64).await;
    let (rows, payments): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT payment_id) FROM payment_status_history
         WHERE to_status = 'succeeded'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("history");
    assert_eq!(
        (rows, payments),
        ((slow + fast) as i64, (slow + fast) as i64),
        "each payment recorded succeeded exactly once"
    );
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM payments WHERE id = $1")
        .bind(locked)
        .fetch_one(&app.pool)
        .await
        .expect("the locked payment");
    assert_eq!(
        attempts, 2,
        "the payment whose outcome was not recorded was claimed again by the next worker"
    );
    testkit::sigterm(&second);
    assert!(second.wait().await.expect("exit").success());
}

/// A batched statement that one row refuses (here a trigger that raises for
/// the approvals of a few payments, a real error from PostgreSQL, not a
/// transient one) fails for every item in it. The worker then runs the
/// items one by one: every other payment of the batch is recorded, once;
/// the refused ones stay `processing`, neither failed nor succeeded (the
/// processor approved them), until the row is accepted again, when they
/// are recorded without a second charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_one_row_refuses_is_split_and_every_other_payment_is_recorded_once() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut worker = testkit::fast_worker_settings();
    worker.concurrency = 64;
    let app = TestApp::with(Options {
        worker,
        ..Options::api_only()
    })
    .await;
    let (refused, total) = (3, 40);
    // Every call answered after the same delay: the approvals arrive
    // together, and all but the first wait in one batch.
    app.set_faults(json!({"latency_ms": 500})).await;
    let ids = app.submit(cards::VISA, total).await;
    let refused_ids: Vec<uuid::Uuid> = ids[..refused]
        .iter()
        .map(|id| {
            id.parse::<common::domain::PaymentId>()
                .expect("a payment id")
                .0
        })
        .collect();
    let list = refused_ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION refuse_some_approvals() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             RAISE EXCEPTION 'this test refuses the approval of %', NEW.id;
         END $$;
         CREATE TRIGGER refuse_some_approvals BEFORE UPDATE ON payments FOR EACH ROW
             WHEN (NEW.status = 'succeeded' AND NEW.id IN ({list}))
             EXECUTE FUNCTION refuse_some_approvals();"
    ))
    .execute(&app.pool)
    .await
    .expect("install the refusing trigger");

    let mut first = app
        .worker_command(WORKER_BIN)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let mut lines = BufReader::new(first.stderr.take().expect("stderr")).lines();
    let split = tokio::spawn(async move {
        let mut split = false;
        while let Ok(Some(line)) = lines.next_line().await {
            split |= line.contains("a batched statement failed; running its items one by one");
        }
        split
    });

    let others = (total - refused) as i64;
    app.eventually(
        "every payment but the refused recorded",
        Duration::from_secs(60),
        || async { (app.count_status("succeeded").await == others).then_some(()) },
    )
    .await;
    for id in &refused_ids {
        let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .expect("a refused payment");
        assert_eq!(
            status, "processing",
            "a payment whose approval was not recorded is neither failed nor succeeded"
        );
    }
    assert_eq!(app.count_status("failed").await, 0);

    sqlx::raw_sql(
        "DROP TRIGGER refuse_some_approvals ON payments;
         DROP FUNCTION refuse_some_approvals();",
    )
    .execute(&app.pool)
    .await
    .expect("drop the trigger");
    let counts = app
        .wait_all_terminal(total as i64, Duration::from_secs(60))
        .await;
    assert_eq!(counts.get("succeeded"), Some(&(total as i64)), "{counts:?}");
    app.assert_charged_once_each(total as u64).await;
    let (rows, payments): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT payment_id) FROM payment_status_history
         WHERE to_status = 'succeeded'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("history");
    assert_eq!(
        (rows, payments),
        (total as i64, total as i64),
        "each payment recorded succeeded exactly once"
    );
    testkit::sigterm(&first);
    assert!(first.wait().await.expect("exit").success());
    assert!(
        split.await.expect("the log reader"),
        "a batch holding a refused approval was split into single statements"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_outage_dead_letters_every_payment_and_a_replay_brings_them_home() {
    let app = TestApp::with(Options::max_attempts(3)).await;
    app.set_faults(json!({"outage": true})).await;
    let ids = app.submit(cards::VISA, 20).await;
    let counts = app.wait_all_terminal(20, Duration::from_secs(60)).await;
    assert_eq!(counts.get("failed"), Some(&20), "{counts:?}");
    let payment = app.payment(&ids[0]).await;
    assert_eq!(
        payment["failure_code"], "processor_unavailable",
        "{payment}"
    );
    assert_eq!(payment["attempts"], 3);
    assert!(
        payment["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{payment}"
    );
    app.wait_queue_depth("dead", 20).await;
    let broker = app.broker().await;
    let letters = common::dead_letters::list(&broker, 100)
        .await
        .expect("list");
    assert_eq!(letters.len(), 20);
    assert!(letters
        .iter()
        .all(|l| l.reason.as_str() == "attempts_exhausted" && l.attempts == Some(3)));
    assert_eq!(
        app.queue_depth("dead").await,
        20,
        "listing consumed nothing"
    );

    app.set_faults(json!({"outage": false})).await;
    worker::cli::run(app.worker_config(&["dlq", "replay", "--all"]))
        .await
        .expect("replay");
    let counts = app.wait_all_terminal(20, Duration::from_secs(60)).await;
    assert_eq!(counts.get("succeeded"), Some(&20), "{counts:?}");
    assert_eq!(
        app.queue_depth("dead").await,
        0,
        "the dead-letter queue is empty"
    );
    app.assert_charged_once_each(20).await;
    let history = common::db::payments::history(&app.pool, ids[0].parse().expect("id"))
        .await
        .expect("history");
    assert!(
        history
            .iter()
            .any(|h| h.actor.starts_with("operator:") && h.to_status == "pending"),
        "the replay is recorded with who did it"
    );

    // Replaying again changes nothing; nor does a stale dead letter of a
    // payment that has meanwhile succeeded.
    let report = common::dead_letters::replay(
        &app.pool,
        &broker,
        &common::dead_letters::Filter::default(),
        "operator:test",
    )
    .await
    .expect("replay");
    assert!(report.replayed.is_empty());
    let job = common::queue::Job::process_payment(ids[0].parse().expect("id"), uuid::Uuid::nil());
    broker
        .publish(
            Topology::DEAD_KEY,
            &job.to_bytes(),
            headers::build(&[]),
            None,
        )
        .await
        .expect("publish stale dead letter");
    let report = common::dead_letters::replay(
        &app.pool,
        &broker,
        &common::dead_letters::Filter::default(),
        "operator:test",
    )
    .await
    .expect("replay");
    assert_eq!((report.replayed.len(), report.dropped.len()), (0, 1));
    assert_eq!(app.payment(&ids[0]).await["status"], "succeeded");
    app.assert_charged_once_each(20).await;
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_their_reason_and_the_worker_keeps_going() {
    let app = TestApp::spawn().await;
    let broker = app.broker().await;
    broker
        .publish(
            Topology::PROCESS_KEY,
            b"\x00not json at all",
            headers::build(&[]),
            None,
        )
        .await
        .expect("publish garbage");
    broker
        .publish(
            Topology::PROCESS_KEY,
            br#"{"type":"process_payment.v9","payment_id":"x"}"#,
            headers::build(&[]),
            None,
        )
        .await
        .expect("publish unknown version");
    let ghost =
        common::queue::Job::process_payment(common::domain::PaymentId::new(), uuid::Uuid::nil());
    broker
        .publish(
            Topology::PROCESS_KEY,
            &ghost.to_bytes(),
            headers::build(&[]),
            None,
        )
        .await
        .expect("publish unknown payment");
    app.submit(cards::VISA, 5).await;
    let counts = app.wait_all_terminal(5, Duration::from_secs(30)).await;
    assert_eq!(counts.get("succeeded"), Some(&5));
    app.wait_queue_depth("dead", 3).await;
    let mut reasons = app.dead_reasons().await;
    reasons.sort();
    assert_eq!(reasons, ["undecodable", "undecodable", "unknown_payment"]);
    assert_eq!(app.queue_depth("process").await, 0);
    broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stop_consuming_while_the_database_is_down_and_resume_after() {
    let app = TestApp::with(Options {
        workers: 1,
        worker_db_proxy: true,
        ..Options::default()
    })
    .await;
    app.set_faults(json!({"latency_ms": 100})).await;
    let proxy = app.worker_db_proxy.as_ref().expect("proxy");
    proxy.cut();
    app.submit(cards::VISA, 30).await;
    // While cut, the worker holds what it took and finishes nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = app.status_counts().await;
    assert_eq!(
        counts.get("pending"),
        Some(&30),
        "nothing moved while the database was unreachable: {counts:?}"
    );
    proxy.restore();
    let counts = app.wait_all_terminal(30, Duration::from_secs(60)).await;
    assert_eq!(counts.get("succeeded"), Some(&30), "{counts:?}");
    app.assert_charged_once_each(30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_loses_the_broker_after_committing_is_redelivered_harmlessly() {
    let app = TestApp::with(Options {
        workers: 1,
        worker_amqp_proxy: true,
        ..Options::default()
    })
    .await;
    app.set_faults(json!({"latency_ms": 500})).await;
    app.submit(cards::VISA, 20).await;
    app.eventually("calls in flight", Duration::from_secs(30), || async {
        (app.count_status("processing").await >= 4).then_some(())
    })
    .await;
    // The calls finish and commit, but their acks go nowhere: the broker
    // redelivers those messages once the worker reconnects.
    let proxy = app.worker_amqp_proxy.as_ref().expect("proxy");
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let counts = app.wait_all_terminal(20, Duration::from_secs(60)).await;
    assert_eq!(counts.get("succeeded"), Some(&20), "{counts:?}");
    app.assert_charged_once_each(20).await;
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT payment_id FROM payment_status_history WHERE to_status = 'succeeded'
         GROUP BY payment_id HAVING count(*) > 1) d",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(
        doubled, 0,
        "a redelivered message found the payment terminal and did nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_message_was_lost_is_rescued() {
    let app = TestApp::with(Options {
        api_amqp_proxy: true,
        ..Options::api_only()
    })
    .await;
    // Accepted while the broker is cut, so its message exists only in the
    // outbox; then the outbox row is lost too.
    app.amqp_proxy.as_ref().expect("proxy").cut();
    let id = app.create_payment(cards::VISA).await;
    sqlx::query("DELETE FROM outbox")
        .execute(&app.pool)
        .await
        .expect("lose the message");
    let mut app = app;
    app.start_worker().await;
    let counts = app.wait_all_terminal(1, Duration::from_secs(30)).await;
    assert_eq!(
        counts.get("succeeded"),
        Some(&1),
        "the rescuer re-enqueued it: {counts:?}"
    );
    assert_eq!(app.payment(&id).await["status"], "succeeded");
    app.assert_charged_once_each(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_waiting_for_a_retry_shows_its_attempts_last_error_and_next_attempt() {
    let mut worker = testkit::fast_worker_settings();
    worker.retry_delays =
        common::queue::RetryTiers::new(vec![Duration::from_secs(1)]).expect("one tier");
    worker.max_attempts = 20;
    let app = TestApp::with(Options {
        worker,
        ..Options::default()
    })
    .await;
    app.set_faults(json!({"error_rate": 1.0})).await;
    let id = app.create_payment(cards::VISA).await;
    let waiting = app
        .eventually(
            "the payment pending a retry",
            Duration::from_secs(20),
            || async {
                let payment = app.payment(&id).await;
                (payment["status"] == "pending" && payment["attempts"].as_i64() >= Some(1))
                    .then_some(payment)
            },
        )
        .await;
    // A 500 may come after the processor acted: the outcome is unknown
    // until the next attempt asks.
    assert_eq!(
        waiting["last_error"],
        "outcome unknown, awaiting confirmation from the card processor: processor answered 500",
        "{waiting}"
    );
    assert!(
        waiting["next_attempt_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{waiting}"
    );
    app.set_faults(json!({"error_rate": 0.0})).await;
    app.wait_all_terminal(1, Duration::from_secs(30)).await;
    let done = app.payment(&id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["next_attempt_at"], serde_json::Value::Null);
    app.assert_charged_once_each(1).await;
}
