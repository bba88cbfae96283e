//! A three-node RabbitMQ cluster losing nodes while money moves
//! (DESIGN.md §15): the test's own cluster (`testkit::Cluster`, on its own
//! ports and directories, removed at the end even on failure), API and
//! workers on the list of its three nodes, nodes SIGKILLed for real. Then
//! the invariants: every payment terminal, charged once, recorded once,
//! none lost, no dead letter.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::queue::{Broker, Topology};
use serde_json::json;
use testkit::{cards, Cluster, Options, TestApp};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// One cluster test at a time: two clusters of three nodes on a small
/// machine would slow each other's recovery down and blur the timings.
static ONE_CLUSTER: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

/// Payments accepted by the submitter, and the answers that were not 202.
#[derive(Debug, Default)]
struct Submitted {
    accepted: usize,
    refused: Vec<String>,
}

/// Submits a payment every `every` until `stop`; what it got back.
fn submit_steadily(
    app: &TestApp,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Submitted> {
    let http = app.http.clone();
    let url = app.url("/v1/payments");
    let key = app.key.clone();
    tokio::spawn(async move {
        let mut submitted = Submitted::default();
        let mut tick = tokio::time::interval(every);
        while !stop.is_cancelled() {
            tick.tick().await;
            let response = http
                .post(&url)
                .bearer_auth(&key)
                .json(&testkit::payment_body(cards::VISA))
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 202 => submitted.accepted += 1,
                Ok(r) => submitted.refused.push(format!("{}", r.status())),
                Err(err) => submitted.refused.push(err.to_string()),
            }
        }
        submitted
    })
}

async fn db_now(app: &TestApp) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT now()")
        .fetch_one(&app.pool)
        .await
        .expect("now()")
}

/// Time from `since` until `n` payments accepted after `at` (database
/// time) have succeeded: payments complete again.
async fn recovery(app: &TestApp, at: DateTime<Utc>, since: Instant, n: i64) -> Duration {
    app.eventually(
        "payments accepted after the kill to succeed",
        Duration::from_secs(60),
        || async {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM payments WHERE created_at > $1 AND status = 'succeeded'",
            )
            .bind(at)
            .fetch_one(&app.pool)
            .await
            .expect("count");
            (done >= n).then(|| since.elapsed())
        },
    )
    .await
}

/// Payments with more than one `succeeded` row in their history.
async fn recorded_twice(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT payment_id FROM payment_status_history
           WHERE to_status = 'succeeded' GROUP BY payment_id HAVING count(*) > 1) twice",
    )
    .fetch_one(&app.pool)
    .await
    .expect("history")
}

async fn kill(cluster: &Cluster, n: usize) {
    let started = Instant::now();
    tokio::task::block_in_place(|| cluster.kill(n)).expect("kill node");
    eprintln!("killed node {n} in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_process_queue_leader_then_another_node_loses_no_payment_and_charges_none_twice(
) {
    let _one = ONE_CLUSTER.lock().await;
    let cluster = Cluster::start().await.expect("cluster up");
    let app = TestApp::with(Options {
        workers: 2,
        amqp_url: Some(cluster.urls()),
        ..Options::default()
    })
    .await;
    let queue = Topology::new(&app.prefix).process_queue();
    let stop = CancellationToken::new();
    let submitter = submit_steadily(&app, Duration::from_millis(50), stop.clone());

    // Flowing before the first kill.
    let start = db_now(&app).await;
    recovery(&app, start, Instant::now(), 20).await;

    let mut timings = Vec::new();
    let leader = tokio::task::block_in_place(|| cluster.leader(&queue)).expect("leader");
    let at = db_now(&app).await;
    let since = Instant::now();
    kill(&cluster, leader).await;
    let took = recovery(&app, at, since, 5).await;
    eprintln!("kill 1: node {leader} (leader of {queue}): payments complete again after {took:?}");
    timings.push(took);

    // Node back; the queue has its three replicas again.
    tokio::task::block_in_place(|| cluster.restart(leader)).expect("restart node");
    let back = db_now(&app).await;
    recovery(&app, back, Instant::now(), 10).await;

    // Then another node: the leader now if it is not the one restarted,
    // else the next one.
    let now_leader = tokio::task::block_in_place(|| cluster.leader(&queue)).expect("leader");
    let second = if now_leader == leader {
        leader % 3 + 1
    } else {
        now_leader
    };
    let at = db_now(&app).await;
    let since = Instant::now();
    kill(&cluster, second).await;
    let took = recovery(&app, at, since, 5).await;
    eprintln!(
        "kill 2: node {second} (leader: {}): payments complete again after {took:?}",
        second == now_leader
    );
    timings.push(took);

    stop.cancel();
    let submitted = submitter.await.expect("submitter");
    assert!(
        submitted.refused.is_empty(),
        "every payment accepted while nodes died: {submitted:?}"
    );
    let n = submitted.accepted;
    assert!(n > 100, "payments flowed at a steady rate: {n}");
    let n64 = i64::try_from(n).expect("a small n");
    let counts = app.wait_all_terminal(n64, Duration::from_secs(120)).await;
    assert_eq!(counts.get("succeeded"), Some(&n64), "{counts:?}");
    app.assert_charged_once_each(u64::try_from(n).expect("n"))
        .await;
    assert_eq!(recorded_twice(&app).await, 0, "each recorded once");
    assert_eq!(
        app.try_queue_depth("dead").await,
        Some(0),
        "no dead letter caused by the kills"
    );
    // A publish the broker refused stays in the outbox until the relay's
    // is confirmed.
    app.eventually(
        "every outbox row published",
        Duration::from_secs(30),
        || async { (app.count("outbox").await == 0).then_some(()) },
    )
    .await;
    eprintln!("{n} payments; recovery per kill: {timings:?}");

    // The API started on node 1, the first of the list and the first
    // killed: it moved on, says where it is, and counted the move.
    let ready: serde_json::Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json");
    let on = ready["broker_node"]
        .as_str()
        .and_then(|addr| cluster.node_at(addr))
        .unwrap_or_else(|| panic!("a node of the cluster in {ready}"));
    assert_ne!(on, second, "not on the node that is down: {ready}");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let reconnections: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("payments_api_broker_reconnections_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("the reconnections counter in {metrics}"));
    assert!(reconnections >= 1, "reconnections counted: {reconnections}");
    for took in &timings {
        assert!(
            *took < Duration::from_secs(30),
            "payments complete again within 30 s of a kill (aim: 10 s): {timings:?}"
        );
    }
    drop(app);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_of_a_worker_with_payments_at_the_processor_dies_and_each_is_recorded_once() {
    let _one = ONE_CLUSTER.lock().await;
    let cluster = Cluster::start().await.expect("cluster up");
    let mut worker = testkit::fast_worker_settings();
    worker.processor_timeout = Duration::from_secs(5);
    worker.lease = Duration::from_secs(20);
    let app = TestApp::with(Options {
        workers: 1,
        worker,
        amqp_url: Some(cluster.urls()),
        ..Options::default()
    })
    .await;
    let queue = Topology::new(&app.prefix).process_queue();
    // Where the worker consumes, asked before the payments go out: the
    // command line takes a second or so, and the kill must come while
    // they are at the processor.
    let node = app
        .eventually("the worker consuming", Duration::from_secs(20), || async {
            let nodes = tokio::task::block_in_place(|| cluster.consumer_nodes(&queue)).ok()?;
            match nodes[..] {
                [node] => Some(node),
                _ => None,
            }
        })
        .await;
    // A slow issuer: the payments wait at the processor while the node dies.
    app.set_faults(json!({"latency_ms": 3000})).await;
    let n = 10;
    app.submit(cards::VISA, n).await;
    app.eventually(
        "every payment at the processor",
        Duration::from_secs(20),
        || async { (app.count_status("processing").await == 10).then_some(()) },
    )
    .await;
    kill(&cluster, node).await;
    assert!(
        app.count_status("processing").await > 0,
        "the node died while payments were at the processor"
    );

    let counts = app
        .wait_all_terminal(n as i64, Duration::from_secs(60))
        .await;
    assert_eq!(counts.get("succeeded"), Some(&(n as i64)), "{counts:?}");
    app.assert_charged_once_each(n as u64).await;
    assert_eq!(recorded_twice(&app).await, 0, "each recorded once");
    assert_eq!(app.try_queue_depth("dead").await, Some(0), "no dead letter");
    // The worker moved on to another node and consumes there.
    let moved = app
        .eventually(
            "the worker consuming on another node",
            Duration::from_secs(20),
            || async {
                let nodes = tokio::task::block_in_place(|| cluster.consumer_nodes(&queue)).ok()?;
                // The dead node's consumer may still be listed (the queue
                // forgets it when the node comes back).
                nodes.into_iter().find(|n| *n != node)
            },
        )
        .await;
    eprintln!("worker moved from node {node} to node {moved}");
    app.set_faults(json!({"latency_ms": 0})).await;
    app.submit(cards::VISA, 5).await;
    app.wait_all_terminal(n as i64 + 5, Duration::from_secs(30))
        .await;
    drop(app);
    cluster.stop().await;
}

/// No cluster needed: a list whose first node does not answer connects to
/// the next, and says which one it is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_list_whose_first_node_is_down_connects_to_the_next() {
    let dead = testkit::free_port();
    let urls = format!(
        "amqp://guest:guest@127.0.0.1:{dead}/%2f, {}",
        testkit::amqp_url()
    );
    let prefix = format!("test_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let topology = Topology::new(&prefix);
    let broker = Broker::connect(&urls, topology.clone())
        .await
        .expect("connects to the second node");
    assert_eq!(
        broker.node(),
        Some(testkit::amqp_addr().to_string()),
        "on the node that answered"
    );
    assert_eq!(broker.reconnections(), 0, "a first connection");
    broker.close().await;
    assert_eq!(broker.node(), None, "closed");
    let channel = broker.open_channel().await.expect("reconnects");
    assert_eq!(broker.reconnections(), 1, "counted as a reconnection");
    topology.delete(&channel).await.expect("remove the queues");
    broker.close().await;
}
