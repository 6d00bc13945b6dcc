//! The failover policy and pool safety of SPEC §8, end to end against a mock upstream that
//! answers per path or per key: a 403 about the request changes no key, a 401 fails its key,
//! non-idempotent requests are not repeated after a 5xx, LLM calls may take minutes, a config's
//! own response timeout, and the `x-akr-attempts` header.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Behavior, MockUpstream, TestApp, spawn_app, spawn_app_with};

/// Creates an LLM config (OpenAI format) with extra fields and returns its id.
async fn llm_config(app: &TestApp, slug: &str, base: &str, extra: Value) -> i64 {
    let mut body = json!({
        "name": slug, "slug": slug, "config_type": "LLM",
        "target_base_url": format!("{base}/v1"), "api_format": "openai_compatible",
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let response = app.create_config(&body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

fn health(keys: &[Value]) -> Vec<&str> {
    keys.iter().map(|k| k["health"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_403_about_the_request_reaches_the_client_and_fails_no_key() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on_path(
        "/repos/private",
        Behavior::Status(
            403,
            r#"{"message":"Resource not accessible by integration"}"#,
            vec![],
        ),
    );
    let id = app
        .generic_config("pool", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["k1", "k2", "k3"]).await;
    for _ in 0..3 {
        let response = app
            .proxy(Method::GET, "/proxy/pool/repos/private")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        assert_eq!(response.headers()["x-akr-attempts"], "403");
    }
    assert_eq!(mock.received().len(), 3, "one attempt per request");
    assert_eq!(health(&app.list_keys(id).await), ["ok", "ok", "ok"]);
    let next = app
        .proxy(Method::GET, "/proxy/pool/repos/public")
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 200, "the pool is still up");
}

#[tokio::test]
async fn an_llm_403_is_confirmed_by_a_probe_before_its_key_fails() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    // Every key may list models, but no key may use this model: the 403 is about the request.
    mock.on_path(
        "/v1/chat/completions",
        Behavior::Status(
            403,
            r#"{"error":{"message":"you do not have access to this model"}}"#,
            vec![],
        ),
    );
    let id = llm_config(&app, "llm403", &mock.base, json!({})).await;
    app.add_keys(id, &["sk-a", "sk-b", "sk-c"]).await;
    for _ in 0..3 {
        let response = app
            .llm(Method::POST, "/llm/llm403/v1/chat/completions")
            .json(&json!({"model": "o1-pro", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
    }
    assert_eq!(health(&app.list_keys(id).await), ["ok", "ok", "ok"]);
    let probes = mock
        .received()
        .iter()
        .filter(|r| r.path == "/v1/models")
        .count();
    assert_eq!(
        probes, 3,
        "each ambiguous 403 was confirmed with the model list"
    );
}

#[tokio::test]
async fn an_llm_key_the_probe_confirms_is_failed_and_the_request_moves_on() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    // This key is refused everywhere, model list included: the 403 is about the key.
    mock.on(
        "sk-banned",
        Behavior::Status(403, r#"{"error":{"message":"forbidden"}}"#, vec![]),
    );
    let id = llm_config(&app, "llmban", &mock.base, json!({})).await;
    app.add_keys(id, &["sk-banned", "sk-fine"]).await;
    let response = app
        .llm(Method::POST, "/llm/llmban/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(health(&app.list_keys(id).await), ["failed", "ok"]);
}

#[tokio::test]
async fn a_key_answering_401_invalid_api_key_is_failed_and_skipped() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "k-invalid",
        Behavior::Status(
            401,
            r#"{"error":{"message":"Incorrect API key provided","code":"invalid_api_key"}}"#,
            vec![],
        ),
    );
    let id = app
        .generic_config("invalid", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["k-invalid", "k-good"]).await;
    for _ in 0..6 {
        let response = app
            .proxy(Method::GET, "/proxy/invalid/x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(mock.keys_used()["k-invalid"], 1, "skipped once failed");
    assert_eq!(health(&app.list_keys(id).await), ["failed", "ok"]);
}

#[tokio::test]
async fn a_generic_post_answered_500_reaches_the_upstream_once() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    for key in ["p1", "p2", "p3"] {
        mock.on(key, Behavior::Status(500, r#"{"error":"boom"}"#, vec![]));
    }
    let id = app
        .generic_config("orders", "POST", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["p1", "p2", "p3"]).await;
    let response = app
        .proxy(Method::POST, "/proxy/orders/create")
        .json(&json!({"item": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-akr-attempts"], "500");
    assert_eq!(
        mock.received().len(),
        1,
        "a POST the upstream may have acted on is not repeated"
    );
}

#[tokio::test]
async fn a_slow_non_streaming_llm_call_gets_its_answer_with_default_settings() {
    // PROXY_TIMEOUT at its default (30 s) must not cut an LLM call: LLM configs wait up to
    // LLM_RESPONSE_TIMEOUT (600 s).
    let app = spawn_app_with(&[("PROXY_TIMEOUT", "30")]).await;
    let mock = MockUpstream::start().await;
    mock.on("sk-thinking", Behavior::Slow(Duration::from_secs(40)));
    let id = llm_config(&app, "reasoning", &mock.base, json!({})).await;
    app.add_keys(id, &["sk-thinking", "sk-other"]).await;
    let response = app
        .llm(Method::POST, "/llm/reasoning/v1/chat/completions")
        .json(&json!({"model": "o3", "messages": []}))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(mock.received().len(), 1, "sent once");
}

#[tokio::test]
async fn a_config_response_timeout_gives_504_after_one_attempt() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    for key in ["sk-slow-1", "sk-slow-2"] {
        mock.on(key, Behavior::Slow(Duration::from_secs(5)));
    }
    let id = llm_config(
        &app,
        "impatient",
        &mock.base,
        json!({"response_timeout_seconds": 2}),
    )
    .await;
    app.add_keys(id, &["sk-slow-1", "sk-slow-2"]).await;
    let response = app
        .llm(Method::POST, "/llm/impatient/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["x-akr-attempts"], "timeout");
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("attempts: timeout"), "{message}");
    assert!(!message.contains("sk-slow"), "{message}");
    assert_eq!(
        mock.received().len(),
        1,
        "a timed-out call may have been billed: not re-sent"
    );
}

#[tokio::test]
async fn the_client_error_names_every_attempt_and_no_key() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "a-secret-1",
        Behavior::Status(429, "{}", vec![("retry-after", "60")]),
    );
    mock.on("a-secret-2", Behavior::Status(503, "{}", vec![]));
    let id = app
        .generic_config("named", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["a-secret-1", "a-secret-2"]).await;
    let response = app
        .proxy(Method::GET, "/proxy/named/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-akr-attempts"], "429,503");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = app
        .generic_config(
            "gone",
            "GET",
            &format!("http://127.0.0.1:{closed}"),
            "header",
            "X-Api-Key",
        )
        .await;
    app.add_keys(id, &["b-secret-1", "b-secret-2"]).await;
    let response = app
        .proxy(Method::GET, "/proxy/gone/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["x-akr-attempts"],
        "connect_error,connect_error"
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("connect_error,connect_error"), "{text}");
    assert!(!text.contains("b-secret"), "{text}");
}

#[tokio::test]
async fn policy_fields_are_stored_shown_and_validated() {
    let app = spawn_app().await;
    let id = llm_config(
        &app,
        "policy",
        "https://llm.example.com",
        json!({"max_retries": 1, "retry_on": ["timeout", "RATE_LIMITED"], "response_timeout_seconds": 0}),
    )
    .await;
    let config: Value = app
        .admin(Method::GET, &format!("/proxy-configs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["max_retries"], 1);
    assert_eq!(config["retry_on"], json!(["rate_limited", "timeout"]));
    assert_eq!(config["response_timeout_seconds"], 0);

    let response = app
        .create_config(&json!({
            "name": "bad", "slug": "bad", "config_type": "LLM",
            "target_base_url": "https://llm.example.com/v1",
            "max_retries": 99, "retry_on": ["sometimes"],
        }))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["max_retries", "retry_on"]);
}
