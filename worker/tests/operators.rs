//! The durations an operator types into the `worker` binary are checked: a
//! clear error instead of a panic or a number that wraps around.

use testkit::{Options, TestApp};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_than_past_ten_years_is_a_clear_cli_error_and_replays_nothing() {
    let app = TestApp::with(Options::one_attempt()).await;
    let id = app.dead_letter(1).await.remove(0);
    let run = |args: &[&str]| {
        let mut command = app.worker_command(WORKER_BIN);
        command.args(args);
        async move { command.output().await.expect("run worker dlq") }
    };

    // 213503982334602 days × 86400 s wraps a u64 around to about 17 hours;
    // the others are past ten years, or past what a u64 holds.
    for age in [
        "213503982334602d",
        "3651d",
        "87601h",
        "5256001m",
        "315360001",
        "99999999999999999999s",
    ] {
        let output = run(&["dlq", "replay", "--all", "--older-than", age]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{age} refused: {stderr}");
        assert!(
            stderr.contains("--older-than") && stderr.contains("at most 10 years"),
            "a clear error naming the flag and the bound for {age}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(app.queue_depth("dead").await, 1, "nothing replayed");

    let output = run(&["dlq", "replay", "--all", "--older-than", "3650d"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "ten years is allowed: {output:?}");
    assert!(
        stdout.contains("0 replayed, 0 dropped, 1 left"),
        "the letter is younger than ten years: {stdout}"
    );
    assert_eq!(app.payment(&id).await["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_commands_are_quiet_aligned_show_their_own_help_and_refuse_in_one_line() {
    let app = TestApp::with(Options::one_attempt()).await;
    let id = app.dead_letter(1).await.remove(0);
    let run = |args: &[&str]| {
        let mut command = app.worker_command(WORKER_BIN);
        // As an operator types it: no RUST_LOG.
        command.env_remove("RUST_LOG").args(args);
        async move { command.output().await.expect("run worker dlq") }
    };

    let output = run(&["dlq", "list"]).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "no log lines unless asked: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let reason = lines[0].find("reason").expect("a reason column");
    assert_eq!(
        lines[1].find("attempts_exhausted"),
        Some(reason),
        "aligned: {stdout}"
    );

    let help = run(&["dlq", "--help"]).await;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("replay"), "{help}");
    assert!(
        !help.contains("PROCESSOR_URL") && !help.contains("--concurrency"),
        "only the dlq's own options, not all of run's: {help}"
    );

    let refused = run(&["dlq", "purge"]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("--yes"),
        "{stderr}"
    );
    assert_eq!(app.queue_depth("dead").await, 1, "nothing purged");

    // `--reason` alone selects: no ids, no `--all`.
    let output = run(&["dlq", "replay", "--reason", "attempts_exhausted"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("1 replayed"), "{stdout}");
    app.wait_payment(&id, "charged after the replay", |p| {
        p["status"] == "succeeded"
    })
    .await;
}
