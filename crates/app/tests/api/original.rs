//! Switching from the original backend (SPEC §11): a server started on its database stops and
//! names `import-original`; the import (in place, or from another file) runs twice without
//! importing anything twice; clients of the original keep working through the imported configs;
//! and the inputs the original accepted are accepted.

#[path = "../../../storage-sql/tests/support/original_db.rs"]
mod original_db;

use reqwest::Method;
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

use crate::helpers::{Behavior, MockUpstream, PROXY_KEY, spawn_app, spawn_app_in, test_settings};

async fn write_original(path: &std::path::Path, upstream: &str) {
    let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    for statement in original_db::statements(original_db::Engine::Sqlite, upstream) {
        db.execute_unprepared(&statement).await.unwrap();
    }
    db.close().await.unwrap();
}

fn summary(report: &str) -> &str {
    report
        .lines()
        .find(|line| line.starts_with("configs:"))
        .unwrap()
}

#[tokio::test]
async fn an_original_database_is_upgraded_in_place_and_its_clients_keep_working() {
    let upstream = MockUpstream::start().await;
    upstream.on("sk-openai-one", Behavior::OpenAiApi);
    upstream.on("sk-openai-two", Behavior::OpenAiApi);
    upstream.on("compat-key", Behavior::OpenAiApi);
    let data = tempfile::tempdir().unwrap();
    let database = data.path().join("test.db");
    write_original(&database, &upstream.base).await;
    let settings = test_settings(data.path(), &[]);

    let refused = app::Application::build(settings.clone())
        .await
        .err()
        .unwrap();
    let message = format!("{refused:#}");
    assert!(message.contains("import-original"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");

    let source = database.display().to_string();
    let first = app::import_original::run(&settings, &source).await.unwrap();
    assert!(first.starts_with("upgraded in place"), "{first}");
    let (configs, keys) = (original_db::IMPORTED_CONFIGS, original_db::IMPORTED_KEYS);
    assert_eq!(
        summary(&first),
        format!(
            "configs: {configs} imported, 0 already present; keys: {keys} imported, 0 already present; refused rows: 4"
        )
    );
    for (table, id) in original_db::REFUSED {
        assert!(
            first.contains(&format!("refused {table} row {id}: ")),
            "{first}"
        );
    }
    let again = app::import_original::run(&settings, &source).await.unwrap();
    assert_eq!(
        summary(&again),
        format!(
            "configs: 0 imported, {configs} already present; keys: 0 imported, {keys} already present; refused rows: 4"
        )
    );

    let app = spawn_app_in(data, &[]).await;
    // The slug as the original's clients wrote it: upper case and a dot.
    for _ in 0..2 {
        let response = app
            .llm(Method::POST, "/llm/My.OpenAI/v1/chat/completions")
            .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let used = upstream.keys_used();
    assert_eq!((used["sk-openai-one"], used["sk-openai-two"]), (1, 1));

    // The original sent `Bearer <key>` in a configured `Authorization` header; so do we.
    let response = app
        .llm(Method::POST, "/llm/compat/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let compat = upstream.received().into_iter().last().unwrap();
    assert_eq!(compat.headers["authorization"], "Bearer compat-key");

    let weather = app
        .proxy(Method::GET, "/proxy/weather/today?city=Paris")
        .send()
        .await
        .unwrap();
    assert_eq!(weather.status(), 200);
    let call = upstream.received().into_iter().last().unwrap();
    assert_eq!(call.path, "/weather/today");
    assert_eq!(call.key, "weather-key");

    let retired = app
        .client
        .post(app.url("/llm/retired/v1/messages"))
        .header("x-api-key", PROXY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(retired.status(), 404, "the inactive config stays inactive");
}

#[tokio::test]
async fn an_original_file_imports_into_the_configured_store_once() {
    let upstream = MockUpstream::start().await;
    let source_dir = tempfile::tempdir().unwrap();
    let source = source_dir.path().join("original.db");
    write_original(&source, &upstream.base).await;
    let data = tempfile::tempdir().unwrap();
    let settings = test_settings(data.path(), &[]);
    let source = source.display().to_string();

    let first = app::import_original::run(&settings, &source).await.unwrap();
    assert!(!first.contains("upgraded in place"), "{first}");
    assert!(
        summary(&first).starts_with("configs: 4 imported"),
        "{first}"
    );
    let again = app::import_original::run(&settings, &source).await.unwrap();
    assert!(
        summary(&again).starts_with("configs: 0 imported, 4 already present; keys: 0 imported")
    );

    let app = spawn_app_in(data, &[]).await;
    let configs: Vec<Value> = app
        .admin(Method::GET, "/proxy-configs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slugs: Vec<&str> = configs
        .iter()
        .map(|c| c["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["my.openai", "weather", "retired", "compat"]);
    assert_eq!(configs[3]["api_key_prefix"], "Bearer ");
}

#[tokio::test]
async fn a_missing_source_is_reported_without_touching_the_store() {
    let data = tempfile::tempdir().unwrap();
    let settings = test_settings(data.path(), &[]);
    let missing = data.path().join("nowhere.db").display().to_string();
    let error = app::import_original::run(&settings, &missing)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("is not a file"), "{error}");
    assert!(!data.path().join("test.db").exists());
}

#[tokio::test]
async fn the_inputs_the_original_accepted_are_accepted() {
    let upstream = MockUpstream::start().await;
    upstream.on("ant-key", Behavior::AnthropicApi);
    let app = spawn_app().await;

    let login: Value = app
        .login(crate::helpers::ADMIN_PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(login["success"], true);
    assert!(login["access_token"].is_string());

    // The original console's LLM form: a header location with an empty name.
    let created = app
        .create_config(&json!({
            "name": "Claude", "slug": "Claude.Main", "config_type": "llm",
            "api_key_location": "header", "api_key_name": "",
            "target_base_url": upstream.base, "api_format": "anthropic_native"
        }))
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["slug"], "claude.main");
    assert_eq!(created["api_key_location"], Value::Null);
    app.add_keys(created["id"].as_i64().unwrap(), &["ant-key"])
        .await;

    // Anthropic clients of the original sent `x-anthropic-api-key`; either slug case works.
    for slug in ["Claude.Main", "claude.main"] {
        let response = app
            .client
            .post(app.url(&format!("/llm/{slug}/v1/messages")))
            .header("x-anthropic-api-key", PROXY_KEY)
            .json(&json!({"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{slug}");
    }
    let forwarded = upstream.received().into_iter().last().unwrap();
    assert_eq!(forwarded.headers["x-api-key"], "ant-key");
    assert!(!forwarded.headers.contains_key("x-anthropic-api-key"));

    let taken = app
        .create_config(&json!({
            "name": "Other", "slug": "CLAUDE.MAIN", "config_type": "llm",
            "target_base_url": upstream.base
        }))
        .await;
    assert_eq!(taken.status(), 409, "slugs stay unique case-insensitively");
}

#[tokio::test]
async fn generic_and_llm_configs_send_the_configured_key_prefix() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app().await;
    let generic = app
        .create_config(&json!({
            "name": "GitHub", "slug": "github", "config_type": "GENERIC", "method": "GET",
            "target_url": format!("{}/gh", upstream.base),
            "api_key_location": "header", "api_key_name": "Authorization",
            "api_key_prefix": "token "
        }))
        .await;
    assert_eq!(generic.status(), 201);
    let generic: Value = generic.json().await.unwrap();
    assert_eq!(generic["api_key_prefix"], "token ");
    app.add_keys(generic["id"].as_i64().unwrap(), &["ghp-1"])
        .await;
    let response = app
        .proxy(Method::GET, "/proxy/github/user")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let call = upstream.received().into_iter().last().unwrap();
    assert_eq!(call.headers["authorization"], "token ghp-1");

    let llm = app
        .create_config(&json!({
            "name": "Compat", "slug": "compat", "config_type": "LLM",
            "target_base_url": upstream.base,
            "api_key_location": "header", "api_key_name": "Authorization"
        }))
        .await;
    let llm: Value = llm.json().await.unwrap();
    assert_eq!(llm["api_key_prefix"], "Bearer ", "the original's default");
    app.add_keys(llm["id"].as_i64().unwrap(), &["sk-compat"])
        .await;
    let response = app
        .llm(Method::GET, "/llm/compat/v1/models")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let call = upstream.received().into_iter().last().unwrap();
    assert_eq!(call.headers["authorization"], "Bearer sk-compat");
}

/// Runs the built binary in `dir` with a clean environment and waits (at most 60 s) for it.
fn run_binary(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("BACKEND_HOST", "127.0.0.1")
        .env("BACKEND_PORT", "0")
        .env("ADMIN_PASSWORD", "binary-test-password")
        .env("GLOBAL_PROXY_KEYS", PROXY_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{args:?} did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn the_binary_names_the_command_and_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let database = dir.path().join("data/api_key_rotator.db");
    write_original(&database, "https://up.example").await;

    let refused = run_binary(dir.path(), &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("api-key-rotator import-original"),
        "{stderr}"
    );

    for expected in [
        "configs: 4 imported",
        "configs: 0 imported, 4 already present",
    ] {
        let imported = run_binary(dir.path(), &["import-original", "data/api_key_rotator.db"]);
        let stdout = String::from_utf8_lossy(&imported.stdout);
        assert!(
            imported.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&imported.stderr)
        );
        assert!(summary(&stdout).starts_with(expected), "{stdout}");
    }
}
