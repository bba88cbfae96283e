//! Operators and merchants are different principals: an operator key belongs
//! to no merchant and is made by its own command; a merchant's key, whatever
//! its scopes, never reaches the dead-letter queue nor another merchant's
//! payments. Also the `api` binary's start-up checks of its durations.

use serde_json::{json, Value};
use sqlx::migrate::Migrate as _;
use testkit::cards;
use testkit::{Options, TestApp};

const API_BIN: &str = env!("CARGO_BIN_EXE_api");

/// Runs the real `api` binary against this test's database.
async fn api_cli(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = tokio::process::Command::new(API_BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &app.database_url)
        .env("RUST_LOG", "warn")
        .args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.expect("run the api binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_admin_on_a_merchant_key_is_a_cli_error_pointing_to_the_operator_command() {
    let app = TestApp::with(Options::no_services()).await;
    let keys_before = app.count("api_keys").await;

    for scopes in ["admin", "payments:read,admin"] {
        let output = api_cli(
            &app,
            &[
                "keys",
                "create",
                "--name",
                "ops",
                "--scopes",
                scopes,
                "--merchant",
                "acme",
            ],
            &[],
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "refused: {stderr}{}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(
            stderr.contains("api keys create-operator"),
            "the error points to the operator command: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        api::keys::create_key(&app.pool, "acme", "ops", &["admin".into()])
            .await
            .is_err(),
        "the library refuses it too"
    );
    let keys_after = app.count("api_keys").await;
    assert_eq!(keys_after, keys_before, "no key was created");

    // Merchant scopes still work as documented.
    let output = api_cli(
        &app,
        &[
            "keys",
            "create",
            "--name",
            "shop",
            "--scopes",
            "payments:read,payments:write",
            "--merchant",
            "acme",
        ],
        &[],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().last().is_some_and(|l| l.starts_with("sk_")),
        "{stdout}"
    );

    // The operator command makes a key of no merchant, with `admin`.
    let output = api_cli(&app, &["keys", "create-operator", "--name", "oncall"], &[]).await;
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().last().is_some_and(|l| l.starts_with("sk_")),
        "the secret on the last line: {stdout}"
    );
    let operators: Vec<(String, Vec<String>)> =
        sqlx::query_as("SELECT name, scopes FROM api_keys WHERE merchant_id IS NULL")
            .fetch_all(&app.pool)
            .await
            .expect("operator keys");
    assert_eq!(operators, vec![("oncall".into(), vec!["admin".into()])]);
    let listed = api_cli(&app, &["keys", "list"], &[]).await;
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("oncall") && l.contains("(operator)")),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_a_merchant_key_with_admin_and_an_operator_key_without_it() {
    let app = TestApp::with(Options::no_services()).await;
    let merchant = common::db::api_keys::ensure_merchant(&app.pool, "acme")
        .await
        .expect("merchant");
    let err = common::db::api_keys::insert(
        &app.pool,
        merchant,
        "sneaky",
        "sk_xxxxx",
        &[1; 32],
        &["payments:read".into(), "admin".into()],
    )
    .await
    .expect_err("a merchant key never carries admin");
    assert_eq!(
        common::db::violated_constraint(&err),
        Some("api_keys_principal_check"),
        "{err}"
    );
    let err = sqlx::query(
        "INSERT INTO api_keys (id, merchant_id, name, prefix, secret_hash, scopes)
         VALUES ($1, NULL, 'odd', 'sk_yyyyy', $2, ARRAY['payments:read'])",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(&[2u8; 32][..])
    .execute(&app.pool)
    .await
    .expect_err("a key of no merchant is an operator key: admin only");
    assert_eq!(
        common::db::violated_constraint(&err),
        Some("api_keys_principal_check"),
        "{err}"
    );
    assert_eq!(
        app.count_where("api_keys", "'admin' = ANY (scopes)").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_keys_that_carried_admin_before_the_upgrade_lose_it() {
    let app = TestApp::with(Options::no_services()).await;
    // Back to the schema before operator keys existed.
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .execute(&app.pool)
        .await
        .expect("reset the schema");
    let migrations = sqlx::migrate!("../migrations");
    let mut conn = app.pool.acquire().await.expect("connection");
    conn.ensure_migrations_table()
        .await
        .expect("migrations table");
    for migration in migrations.iter().filter(|m| m.version < 20261201000002) {
        conn.apply(migration).await.expect("an older migration");
    }
    drop(conn);
    sqlx::raw_sql(
        "INSERT INTO merchants (id, name) VALUES ('00000000-0000-7000-8000-000000000001', 'acme');
         INSERT INTO api_keys (id, merchant_id, name, prefix, secret_hash, scopes) VALUES
           ('00000000-0000-7000-8000-00000000000a', '00000000-0000-7000-8000-000000000001',
            'mixed', 'sk_a', '\\x0a', ARRAY['payments:read', 'admin']),
           ('00000000-0000-7000-8000-00000000000b', '00000000-0000-7000-8000-000000000001',
            'admin-only', 'sk_b', '\\x0b', ARRAY['admin']),
           ('00000000-0000-7000-8000-00000000000c', '00000000-0000-7000-8000-000000000001',
            'plain', 'sk_c', '\\x0c', ARRAY['payments:write']);",
    )
    .execute(&app.pool)
    .await
    .expect("keys of the old model");

    common::db::migrate(&app.pool).await.expect("upgrade");
    let keys: Vec<(String, Vec<String>, bool)> =
        sqlx::query_as("SELECT name, scopes, revoked_at IS NOT NULL FROM api_keys ORDER BY name")
            .fetch_all(&app.pool)
            .await
            .expect("keys");
    assert_eq!(
        keys,
        vec![
            ("admin-only".into(), vec![], true),
            ("mixed".into(), vec!["payments:read".into()], false),
            ("plain".into(), vec!["payments:write".into()], false),
        ],
        "admin is gone from every merchant key; a key left with nothing is revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_key_with_every_scope_reaches_neither_the_dead_letters_nor_another_merchants_payment(
) {
    let app = TestApp::with(Options::one_attempt()).await;
    let id = app.dead_letter(1).await.remove(0);
    let every_scope: Vec<&str> = common::domain::Scope::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    let acme = app.key_for("acme", &every_scope).await;
    let list = "/v1/admin/dead-letters";
    let replay = format!("{list}/replay");

    let response = app.get_as(&acme, list).await;
    assert_eq!(response.status(), 403, "{:?}", response.text().await);
    for body in [json!({"all": true}), json!({"payment_ids": [id]})] {
        let response = app.post_as(&acme, &replay, &body).await;
        assert_eq!(response.status(), 403, "{:?}", response.text().await);
        let error: Value = response.json().await.expect("envelope");
        assert_eq!(error["error"]["type"], "permission_error");
    }
    let response = app.get_as(&acme, &format!("/v1/payments/{id}")).await;
    assert_eq!(response.status(), 404, "another merchant's payment");

    assert_eq!(
        app.queue_depth("dead").await,
        1,
        "the dead letter is intact"
    );
    assert_eq!(app.payment(&id).await["status"], "failed", "not replayed");

    // The operator sees it.
    let operator = app.operator_key().await;
    let listed: Value = app
        .get_as(&operator, list)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"][0]["payment_id"], id.as_str(), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_key_belongs_to_no_merchant_and_cannot_touch_payments() {
    let app = TestApp::api_only().await;
    let id = app.create_payment(cards::VISA).await;
    let operator = app.operator_key().await;
    let merchantless = app.count_where("api_keys", "merchant_id IS NULL").await;
    assert_eq!(merchantless, 1, "the operator key has no merchant");

    let response = app.get_as(&operator, &format!("/v1/payments/{id}")).await;
    assert_eq!(response.status(), 403);
    let response = app
        .post_as(
            &operator,
            "/v1/payments",
            &testkit::payment_body(cards::VISA),
        )
        .await;
    assert_eq!(response.status(), 403);
    let error: Value = response.json().await.expect("envelope");
    assert_eq!(error["error"]["type"], "permission_error", "{error}");
    assert_eq!(app.payment_count().await, 1, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_commands_are_quiet_and_their_list_lines_up() {
    let app = TestApp::with(Options::no_services()).await;
    let quiet = |args: &'static [&'static str]| {
        let mut command = tokio::process::Command::new(API_BIN);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.database_url)
            .args(args);
        async move { command.output().await.expect("run the api binary") }
    };
    let long = &[
        "keys",
        "create",
        "--name",
        "a-rather-long-key-name-for-the-table",
        "--scopes",
        "payments:read,payments:write,webhooks:read,webhooks:write",
    ];
    for args in [
        &long[..],
        &["keys", "create", "--name", "k", "--scopes", "payments:read"][..],
    ] {
        let output = quiet(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.is_empty(), "no log lines unless asked: {stderr}");
    }
    let output = quiet(&["keys", "list"]).await;
    assert!(String::from_utf8_lossy(&output.stderr).is_empty());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let status = lines[0].find("status").expect("a status column");
    for line in &lines[1..] {
        assert_eq!(line.find("active"), Some(status), "aligned: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_ttl_that_would_overflow_is_refused_at_start_naming_the_setting() {
    let app = TestApp::with(Options::no_services()).await;
    for hours in ["5124095576030432", "87601"] {
        let output = api_cli(&app, &["migrate"], &[("IDEMPOTENCY_KEY_TTL_HOURS", hours)]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{hours} refused: {stderr}");
        assert!(
            stderr.contains("--idempotency-ttl-hours")
                && stderr.contains("IDEMPOTENCY_KEY_TTL_HOURS")
                && stderr.contains("87600"),
            "names the flag, the variable and the bound: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let output = api_cli(
        &app,
        &["migrate"],
        &[("IDEMPOTENCY_KEY_TTL_HOURS", "87600")],
    )
    .await;
    assert!(output.status.success(), "ten years is allowed: {output:?}");
}
