//! The operator API the console is built on (issue 23): every replay and
//! purge writes an audit row naming the operator key, a purge needs its
//! confirmation, and the overview and needs-attention views answer only
//! operators. The browser console itself is not written yet.

use serde_json::{json, Value};
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
