//! One unit of the worker's work at a time, driven by the test with no
//! background loop (`TestApp::api_only`: no worker runs): one step on one
//! message, one rescuer pass, one webhook delivery step, one webhook rescuer
//! pass. Each asserts the state it changes in the database and the broker.

use std::time::Duration;

use serde_json::json;
use testkit::receiver::Receiver;
use testkit::{cards, TestApp};

/// Each status a payment went through, oldest first.
async fn path_of(app: &TestApp, id: &str) -> Vec<String> {
    common::db::payments::history(&app.pool, id.parse().expect("id"))
        .await
        .expect("history")
        .into_iter()
        .map(|h| h.to_status)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_step_charges_a_pending_payment_once_and_records_it_succeeded() {
    let app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    app.wait_queue_depth("process", 1).await;
    assert_eq!(app.payment(&id).await["status"], "pending");
    assert_eq!(app.sim_stats().await.charges, 0);

    let ctx = app.worker_context().await;
    app.run_one_step(&ctx).await;

    let payment = app.payment(&id).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["attempts"], 1, "{payment}");
    assert_eq!(
        path_of(&app, &id).await,
        ["pending", "processing", "succeeded"]
    );
    let stats = app.sim_stats().await;
    assert_eq!(
        (stats.charges, stats.duplicate_charges),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(app.queue_depth("process").await, 0, "nothing sent again");
    ctx.broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_step_fails_a_declined_payment_with_its_code_and_queues_no_retry() {
    let app = TestApp::api_only().await;
    let declined = cards::DECLINES[1];
    let id = app.create_payment(declined.token).await;
    app.wait_queue_depth("process", 1).await;

    let ctx = app.worker_context().await;
    app.run_one_step(&ctx).await;

    let payment = app.payment(&id).await;
    assert_eq!(payment["status"], "failed", "{payment}");
    assert_eq!(payment["failure_code"], declined.code, "{payment}");
    assert_eq!(
        payment["processor_response"]["decline_code"],
        declined.decline_code
    );
    assert_eq!(
        path_of(&app, &id).await,
        ["pending", "processing", "failed"]
    );
    assert_eq!(app.sim_stats().await.declines, 1);
    // A decline is final: no retry comes back after the first tier.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.queue_depth("process").await, 0);
    ctx.broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_call_fails_leaves_the_payment_pending_and_its_retry_returns_for_the_next_step(
) {
    let app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    app.wait_queue_depth("process", 1).await;
    let ctx = app.worker_context().await;

    app.set_faults(json!({"error_rate": 1.0})).await;
    app.run_one_step(&ctx).await;
    let waiting = app.payment(&id).await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["attempts"], 1, "{waiting}");
    assert!(
        waiting["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("outcome unknown")),
        "{waiting}"
    );
    assert!(waiting["next_attempt_at"].is_string(), "{waiting}");
    // The retry waits out its tier (200 ms), then is back in the main queue.
    app.wait_queue_depth("process", 1).await;

    app.set_faults(json!({"error_rate": 0.0})).await;
    app.run_one_step(&ctx).await;
    let done = app.payment(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let stats = app.sim_stats().await;
    assert_eq!(stats.charges, 1, "{stats:?}");
    assert!(stats.lookups >= 1, "the second step asked first: {stats:?}");
    ctx.broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rescuer_pass_requeues_an_overdue_payment_whose_message_was_lost() {
    let app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    app.wait_queue_depth("process", 1).await;
    app.purge("process").await;
    sqlx::query("UPDATE payments SET due_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .expect("make it overdue");
    let ctx = app.worker_context().await;

    let rescued = worker::rescuer::rescue_once(&ctx).await.expect("a pass");
    assert_eq!(rescued, 1);
    app.wait_queue_depth("process", 1).await;
    assert_eq!(app.payment(&id).await["status"], "pending");
    // The pass pushed the payment's due time past its grace period: a second
    // pass right away sends nothing more.
    assert_eq!(worker::rescuer::rescue_once(&ctx).await.expect("a pass"), 0);
    assert_eq!(app.queue_depth("process").await, 1);

    app.run_one_step(&ctx).await;
    assert_eq!(app.payment(&id).await["status"], "succeeded");
    app.assert_charged_once_each(1).await;
    ctx.broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_step_sends_the_event_signed_and_records_it_delivered() {
    let app = TestApp::api_only().await;
    let receiver = Receiver::start().await;
    let (_, secret) = app
        .register_webhook(&receiver.url(), &["payment.created"])
        .await;
    let id = app.create_payment(cards::VISA).await;
    app.wait_queue_depth("webhooks.process", 1).await;
    assert_eq!(
        app.count_where("webhook_deliveries", "status = 'pending'")
            .await,
        1
    );

    let ctx = app.worker_context().await;
    let (body, _) = app.take_message("webhooks.process").await;
    worker::webhooks::handle(&ctx, &body)
        .await
        .expect("the step finishes");

    let got = receiver.got();
    assert_eq!(got.len(), 1, "one request");
    assert!(got[0].verifies_with(&secret));
    assert_eq!(got[0].kind(), "payment.created");
    assert_eq!(got[0].object_id(), id);
    assert_eq!(
        app.count_where("webhook_deliveries", "status = 'delivered'")
            .await,
        1
    );
    assert_eq!(
        app.count_where("webhook_attempts", "outcome = 'delivered'")
            .await,
        1
    );
    assert_eq!(app.queue_depth("webhooks.process").await, 0);
    ctx.broker.close().await;
    ctx.webhooks.broker.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_webhook_rescuer_pass_publishes_a_delivery_whose_message_was_lost() {
    let app = TestApp::api_only().await;
    let receiver = Receiver::start().await;
    app.register_webhook(&receiver.url(), &["payment.created"])
        .await;
    app.create_payment(cards::VISA).await;
    app.wait_queue_depth("webhooks.process", 1).await;
    app.purge("webhooks.process").await;
    let delivery: uuid::Uuid = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET due_at = now() - interval '1 hour' RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .expect("make it overdue");
    let ctx = app.worker_context().await;

    let rescued = worker::webhooks::rescue_once(&ctx).await.expect("a pass");
    assert_eq!(rescued, 1);
    let (body, _) = app.take_message("webhooks.process").await;
    let job = common::webhooks::DeliveryJob::from_bytes(&body).expect("a delivery job");
    assert_eq!(job.delivery_id(), delivery);
    assert_eq!(
        worker::webhooks::rescue_once(&ctx).await.expect("a pass"),
        0,
        "not overdue any more"
    );
    assert!(receiver.got().is_empty(), "a pass publishes, never sends");
    ctx.broker.close().await;
    ctx.webhooks.broker.close().await;
}

/// The batched claim and approval, and the events trigger they fire, find
/// each payment by its key whatever the planner knows of the table: a plan
/// made while `payments` is small (a new database) is kept by the
/// connection, and a plan that scans the table then reads every payment on
/// every statement once the table has grown. A new connection makes its
/// plans here, on a small table and a batch of 30; the transaction's own
/// counters tell whether any of them scanned `payments`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_claims_and_approvals_look_payments_up_by_key_on_a_small_table() {
    use common::db::lifecycle::Audit;
    use common::db::payments::{self, Approval};
    use common::domain::PaymentId;
    use common::processor::{CardDetails, ProcessorResponse};
    use sqlx::Connection;

    let app = TestApp::api_only().await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        let id: PaymentId = app.create_payment(cards::VISA).await.parse().expect("id");
        ids.push(id);
    }
    let mut conn = sqlx::PgConnection::connect(&app.database_url_via(None))
        .await
        .expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    let audit = Audit {
        actor: "plans-test",
        reason: "claimed",
    };
    let lease = Duration::from_secs(60);
    let claimed = payments::claim_many(&mut *tx, &ids, lease, Duration::from_secs(5), audit)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), ids.len(), "every payment claimed");
    let approvals: Vec<Approval> = claimed
        .iter()
        .map(|row| Approval {
            id: row.payment_id(),
            attempt: row.attempts,
            captured: true,
            card: CardDetails {
                last4: "4242".into(),
                brand: "visa".into(),
                exp_month: 12,
                exp_year: 2030,
                fingerprint: "fp".into(),
                country: "US".into(),
                funding: "credit".into(),
            },
            processor_response: ProcessorResponse::default(),
            reason: "processor approved",
        })
        .collect();
    let recorded = payments::succeed_many(&mut *tx, &approvals, "plans-test")
        .await
        .expect("approve");
    assert_eq!(recorded.len(), ids.len(), "every approval recorded");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE type = 'payment.succeeded' AND payment_id = ANY($1)",
    )
    .bind(ids.iter().map(|id| id.0).collect::<Vec<_>>())
    .fetch_one(&mut *tx)
    .await
    .expect("events");
    assert_eq!(events, 30, "the trigger wrote each payment's event");
    let (seq_scans, index_scans): (i64, i64) = sqlx::query_as(
        "SELECT seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_xact_user_tables
         WHERE relname = 'payments'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("counters");
    assert_eq!(
        seq_scans, 0,
        "no statement scanned payments ({index_scans} index scans)"
    );
    assert!(
        index_scans >= 60,
        "each payment looked up by key: {index_scans}"
    );
    tx.rollback().await.expect("rollback");
}
