//! A test that fails leaves nothing behind: its database, its exchanges and
//! queues (payments' and webhooks', retry tiers included) are gone and its
//! in-process services stopped, whether it panicked in the test's own body
//! or in a task, and also when it never called `cleanup`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use sqlx::Connection as _;
use testkit::teardown::Leftovers;
use testkit::TestApp;

/// What a test made and where its API listened.
#[derive(Debug, Clone)]
struct Made {
    leftovers: Leftovers,
    api_url: String,
}

fn made(app: &TestApp) -> Made {
    Made {
        leftovers: app.leftovers(),
        api_url: app.api_url.clone(),
    }
}

async fn database_exists(name: &str) -> bool {
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", testkit::pg_server()))
        .await
        .expect("connect to postgres");
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("pg_database");
    found == 1
}

/// The queues of `made` that still exist (a passive declare succeeds).
async fn queues_left(made: &Made) -> Vec<String> {
    let connection =
        lapin::Connection::connect(&testkit::amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("connect to rabbitmq");
    let mut left = Vec::new();
    for topology in &made.leftovers.topologies {
        for queue in topology.queues() {
            // A passive declare of a missing queue closes the channel: one
            // channel per question.
            let channel = connection.create_channel().await.expect("channel");
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            if channel
                .queue_declare(&queue, passive, FieldTable::default())
                .await
                .is_ok()
            {
                left.push(queue);
                let _ = channel.close(200, "checked").await;
            }
        }
    }
    let _ = connection.close(200, "checked").await;
    left
}

/// Asserts everything `made` made is gone, after asserting it was there.
async fn assert_removed(made: &Made) {
    assert!(
        !database_exists(&made.leftovers.db_name).await,
        "the database {} is gone",
        made.leftovers.db_name
    );
    assert_eq!(
        queues_left(made).await,
        Vec::<String>::new(),
        "no queue left"
    );
    // Nothing of the test's runs on to declare them again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        queues_left(made).await,
        Vec::<String>::new(),
        "no queue declared again"
    );
    let api = reqwest::Client::new()
        .get(format!("{}/healthz", made.api_url))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(api.is_err(), "the API stopped listening: {api:?}");
}

/// What the harness made while the test ran: a database, both topologies
/// with their retry tiers (the in-process worker declares them as it
/// starts its consumers).
async fn assert_present(made: &Made) {
    assert!(database_exists(&made.leftovers.db_name).await);
    let payments = &made.leftovers.topologies[0];
    let webhooks = &made.leftovers.topologies[1];
    assert!(!payments.retry_delays().is_empty() && !webhooks.retry_delays().is_empty());
    let expected = 2 + payments.retry_delays().len() + 2 + webhooks.retry_delays().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let present = queues_left(made).await;
        if present.len() == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "every queue declared: {present:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_test_body_that_panics_still_removes_its_database_and_queues() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seen: Arc<Mutex<Option<Made>>> = Arc::default();
    let inside = seen.clone();
    // As `#[tokio::test]` runs a test: `block_on` the body, which panics
    // with the app alive (a failed assertion).
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async move {
            let app = TestApp::spawn().await;
            let what = made(&app);
            assert_present(&what).await;
            *inside.lock().expect("lock") = Some(what);
            // Work in flight as the test fails: an event for the API's
            // relay to publish, a payment for the worker to charge.
            app.register_webhook("http://127.0.0.1:9/hooks", &["*"])
                .await;
            app.create_payment(testkit::cards::VISA).await;
            panic!("a failed assertion");
        })
    }));
    assert!(outcome.is_err(), "the body panicked");
    let made = seen.lock().expect("lock").clone().expect("the app started");
    runtime.block_on(assert_removed(&made));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_panics_with_the_app_still_removes_its_database_and_queues() {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let app = TestApp::spawn().await;
        let what = made(&app);
        assert_present(&what).await;
        sender.send(what).expect("send");
        panic!("a failed assertion in a task");
    });
    let joined = task.await;
    assert!(joined.is_err_and(|e| e.is_panic()), "the task panicked");
    let made = receiver.await.expect("the app started");
    assert_removed(&made).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_ends_without_cleanup_removes_everything_when_the_app_drops() {
    let app = TestApp::spawn().await;
    let made = made(&app);
    assert_present(&made).await;
    drop(app);
    assert_removed(&made).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_everything_and_the_drop_after_it_does_nothing_more() {
    let app = TestApp::spawn().await;
    let made = made(&app);
    assert_present(&made).await;
    app.cleanup().await;
    assert_removed(&made).await;
}
