//! One pass of each of the API's relays, driven by the test once the API
//! that would run them in a loop is stopped: the outbox relay publishes what
//! the fast path could not, the event relay renders events and publishes
//! their deliveries. Each asserts the rows it changes and the message it
//! leaves in the queue.

use testkit::receiver::Receiver;
use testkit::{cards, Options, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_outbox_relay_pass_publishes_a_waiting_row_and_deletes_it() {
    let mut app = TestApp::with(Options {
        api_amqp_proxy: true,
        ..Options::api_only()
    })
    .await;
    // Accepted while the API's broker is cut: the message waits in the
    // outbox. Then the API (and its relay loop) stops.
    app.amqp_proxy.as_ref().expect("proxy").cut();
    let id = app.create_payment(cards::VISA).await;
    app.stop_api().await;
    assert_eq!(app.count("outbox").await, 1);
    assert_eq!(app.queue_depth("process").await, 0);
    // A row is the relay's only once the fast path had its chance
    // (`available_at`, a second after the commit here).
    assert_eq!(app.relay_outbox_once().await, 0, "not due yet");
    sqlx::query("UPDATE outbox SET available_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .expect("make it due");

    assert_eq!(app.relay_outbox_once().await, 1, "one row published");
    assert_eq!(app.count("outbox").await, 0, "and deleted");
    let (body, _) = app.take_message("process").await;
    let job = common::queue::Job::from_bytes(&body).expect("a job");
    assert_eq!(job.payment_id().to_string(), id);
    assert_eq!(app.relay_outbox_once().await, 0, "nothing left to publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_relay_pass_renders_a_waiting_event_and_publishes_its_delivery() {
    let mut app = TestApp::api_only().await;
    let receiver = Receiver::start().await;
    app.register_webhook(&receiver.url(), &["payment.created"])
        .await;
    let id = app.create_payment(cards::VISA).await;
    // The API's own relay dispatched it; stop the API and put the event
    // back as it was before any relay saw it.
    app.wait_queue_depth("webhooks.process", 1).await;
    app.stop_api().await;
    app.purge("webhooks.process").await;
    sqlx::query("UPDATE events SET dispatched_at = NULL, body = NULL")
        .execute(&app.pool)
        .await
        .expect("undispatch the event");
    assert_eq!(app.count_where("events", "dispatched_at IS NULL").await, 1);

    assert_eq!(app.relay_events_once().await, 1, "one event dispatched");
    assert_eq!(
        app.count_where("events", "dispatched_at IS NOT NULL AND body IS NOT NULL")
            .await,
        1,
        "rendered and marked dispatched"
    );
    let body: String = sqlx::query_scalar("SELECT body FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("the event's body");
    let event: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(event["type"], "payment.created");
    assert_eq!(event["data"]["object"]["id"], id.as_str());
    let delivery: uuid::Uuid = sqlx::query_scalar("SELECT id FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .expect("the delivery");
    let (message, _) = app.take_message("webhooks.process").await;
    let job = common::webhooks::DeliveryJob::from_bytes(&message).expect("a delivery job");
    assert_eq!(job.delivery_id(), delivery);
    assert_eq!(app.relay_events_once().await, 0, "nothing left to dispatch");
    assert!(receiver.got().is_empty(), "a relay publishes, never sends");
}
