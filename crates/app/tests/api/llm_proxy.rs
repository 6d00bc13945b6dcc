//! The LLM proxy end to end for the three formats: client auth variants, key injection, the
//! `/v1` rule, streaming timing, disconnects, failover, idle timeout and redaction.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Behavior, MockUpstream, PROXY_KEY, llm_config, spawn_app, spawn_app_with};

#[tokio::test]
async fn openai_clients_authenticate_with_bearer_or_body_api_key() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    llm_config(
        &app,
        "oai",
        &format!("{}/v1", mock.base),
        "openai_compatible",
        &["sk-up-1"],
    )
    .await;

    let bearer = app
        .llm(Method::POST, "/llm/oai/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let received = mock.received().pop().unwrap();
    assert_eq!(
        received.path, "/v1/chat/completions",
        "the duplicate v1 is dropped"
    );
    assert_eq!(received.headers["authorization"], "Bearer sk-up-1");
    assert!(
        !received.headers.values().any(|v| v.contains(PROXY_KEY)),
        "the proxy key never goes upstream"
    );

    let body_key = app
        .client
        .post(app.url("/llm/oai/chat/completions"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"model":"gpt-4o","api_key":"{PROXY_KEY}","messages":[]}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(body_key.status(), 200);
    let received = mock.received().pop().unwrap();
    assert_eq!(received.path, "/v1/chat/completions");
    assert_eq!(
        received.body_len,
        r#"{"model":"gpt-4o","messages":[]}"#.len(),
        "api_key removed from the body"
    );

    let missing = app
        .client
        .post(app.url("/llm/oai/v1/chat/completions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let error: Value = missing.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer"),
        "OpenAI-shaped error: {error}"
    );
    let wrong = app
        .client
        .get(app.url("/llm/oai/v1/models"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn anthropic_clients_use_x_api_key_and_get_a_default_version() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    llm_config(
        &app,
        "claude",
        &mock.base,
        "anthropic_native",
        &["sk-ant-up"],
    )
    .await;
    let response = app
        .client
        .post(app.url("/llm/claude/v1/messages"))
        .header("x-api-key", PROXY_KEY)
        .json(&json!({"model": "claude", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = mock.received().pop().unwrap();
    assert_eq!(received.key, "sk-ant-up");
    assert_eq!(received.headers["anthropic-version"], "2023-06-01");
    assert!(!received.headers.contains_key("authorization"));

    let response = app
        .llm(Method::POST, "/llm/claude/v1/messages")
        .header("anthropic-version", "2024-01-01")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        mock.received().pop().unwrap().headers["anthropic-version"],
        "2024-01-01",
        "the client's version wins"
    );
}

#[tokio::test]
async fn gemini_clients_use_the_key_query_parameter_or_header() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    llm_config(&app, "gem", &mock.base, "gemini_native", &["AIza-up"]).await;
    let response = app
        .client
        .post(app.url(&format!(
            "/llm/gem/v1beta/models/gemini-pro:generateContent?key={PROXY_KEY}&alt=json"
        )))
        .json(&json!({"contents": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = mock.received().pop().unwrap();
    assert_eq!(received.path, "/v1beta/models/gemini-pro:generateContent");
    assert_eq!(
        received.query, "alt=json",
        "the client's key is removed from the query"
    );
    assert_eq!(received.headers["x-goog-api-key"], "AIza-up");

    let models = app
        .client
        .get(app.url("/llm/gem/v1beta/models"))
        .header("x-goog-api-key", PROXY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(
        mock.received().pop().unwrap().path,
        "/v1beta/models",
        "model lists pass through"
    );
}

#[tokio::test]
async fn model_lists_rotate_like_any_call() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    llm_config(
        &app,
        "models",
        &format!("{}/v1", mock.base),
        "openai_compatible",
        &["a", "b", "c"],
    )
    .await;
    for _ in 0..30 {
        let response = app
            .llm(Method::GET, "/llm/models/v1/models")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let used = mock.keys_used();
    assert_eq!((used["a"], used["b"], used["c"]), (10, 10, 10));
}

#[tokio::test]
async fn every_event_reaches_the_client_as_soon_as_it_is_sent() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "sse",
        Behavior::Events {
            count: 20,
            gap: Duration::from_millis(50),
        },
    );
    llm_config(&app, "stream", &mock.base, "openai_compatible", &["sse"]).await;
    let response = app
        .llm(Method::POST, "/llm/stream/v1/chat/completions")
        .json(&json!({"stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut received_at = Vec::new();
    let mut buffer = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk.unwrap());
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            buffer.drain(..end + 2);
            received_at.push(Instant::now());
        }
    }
    let sent_at = mock.event_times();
    assert_eq!((sent_at.len(), received_at.len()), (20, 20));
    let worst = sent_at
        .iter()
        .zip(&received_at)
        .map(|(s, r)| r.duration_since(*s))
        .max()
        .unwrap();
    // Events are 50 ms apart: any buffering would hold an event back by at least one gap.
    assert!(
        worst < Duration::from_millis(25),
        "an event reached the client {worst:?} after it was sent"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_drops_the_upstream_request() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "long",
        Behavior::Events {
            count: 100,
            gap: Duration::from_millis(50),
        },
    );
    llm_config(&app, "drop", &mock.base, "openai_compatible", &["long"]).await;
    let response = app
        .llm(Method::POST, "/llm/drop/v1/chat/completions")
        .json(&json!({"stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    let gone = Instant::now();
    drop(body);
    let deadline = gone + Duration::from_secs(2);
    while mock.abandoned().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let abandoned = mock.abandoned();
    assert_eq!(abandoned.len(), 1, "the upstream stream was abandoned");
    assert!(abandoned[0].duration_since(gone) < Duration::from_secs(1));
}

#[tokio::test]
async fn a_silent_stream_ends_with_an_error_event_in_the_client_format() {
    let app = spawn_app_with(&[("STREAM_IDLE_TIMEOUT", "1")]).await;
    let mock = MockUpstream::start().await;
    mock.on(
        "stall",
        Behavior::Stall {
            first: 1,
            silence: Duration::from_secs(3),
        },
    );
    llm_config(&app, "stall", &mock.base, "anthropic_native", &["stall"]).await;
    let response = app
        .client
        .post(app.url("/llm/stall/v1/messages"))
        .header("x-api-key", PROXY_KEY)
        .json(&json!({"stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("data: 0\n\n"), "{text}");
    assert!(
        text.contains("event: error"),
        "Anthropic error event: {text}"
    );
    assert!(text.contains("STREAM_IDLE_TIMEOUT"), "{text}");
}

#[tokio::test]
async fn a_rate_limited_key_causes_no_client_error_over_300_requests() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "b",
        Behavior::Status(
            429,
            r#"{"error":{"type":"rate_limit_error"}}"#,
            vec![("retry-after", "300")],
        ),
    );
    mock.on(
        "c",
        Behavior::Status(401, r#"{"error":{"type":"authentication_error"}}"#, vec![]),
    );
    let id = llm_config(
        &app,
        "fail",
        &format!("{}/v1", mock.base),
        "openai_compatible",
        &["a", "b", "c"],
    )
    .await;
    for _ in 0..300 {
        let response = app
            .llm(Method::POST, "/llm/fail/v1/chat/completions")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let used = mock.keys_used();
    assert_eq!((used["b"], used["c"]), (1, 1), "{used:?}");
    let health: Vec<Value> = app
        .list_keys(id)
        .await
        .into_iter()
        .map(|k| k["health"].clone())
        .collect();
    assert_eq!(health, [json!("ok"), json!("cooling"), json!("failed")]);
}

#[tokio::test]
async fn when_every_key_fails_the_client_gets_the_last_upstream_status_and_body() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    for key in ["x", "y"] {
        mock.on(
            key,
            Behavior::Status(
                429,
                r#"{"error":{"message":"quota","type":"insufficient_quota"}}"#,
                vec![],
            ),
        );
    }
    llm_config(&app, "allbad", &mock.base, "openai_compatible", &["x", "y"]).await;
    let response = app
        .llm(Method::POST, "/llm/allbad/v1/chat/completions")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("insufficient_quota")
    );
    let next = app
        .llm(Method::POST, "/llm/allbad/v1/chat/completions")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 503, "both keys cool down");
    assert!(next.headers().contains_key("retry-after"));
    let body: Value = next.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_usable_key");
}

#[tokio::test]
async fn keys_in_a_query_are_redacted_from_error_text() {
    let app = spawn_app().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let response = app
        .create_config(&json!({"name": "g", "slug": "g", "config_type": "LLM", "api_format": "gemini_native",
            "target_base_url": format!("http://127.0.0.1:{closed}"), "api_key_location": "query", "api_key_name": "key"}))
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(id, &["AIzaSyTopSecretUpstream"]).await;
    let response = app
        .client
        .post(app.url(&format!(
            "/llm/g/v1beta/models/m:generateContent?key={PROXY_KEY}"
        )))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("AIzaSyTopSecretUpstream") && !text.contains(PROXY_KEY),
        "{text}"
    );
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], 502, "Gemini-shaped error: {text}");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    llm_config(&app, "big", &mock.base, "openai_compatible", &["k"]).await;
    let response = app
        .llm(Method::POST, "/llm/big/v1/chat/completions")
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn upstream_errors_arrive_in_the_client_formats_shape_when_converting() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "sk-ant",
        Behavior::Status(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens is too large"}}"#,
            vec![],
        ),
    );
    let response = app
        .create_config(&json!({"name": "conv", "slug": "conv", "config_type": "LLM", "target_base_url": mock.base,
            "api_format": "anthropic_native", "output_format": "openai"}))
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(id, &["sk-ant"]).await;
    let response = app
        .llm(Method::POST, "/llm/conv/v1/chat/completions")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let received = mock.received().pop().unwrap();
    assert_eq!(
        received.path, "/v1/messages",
        "the request was converted and sent to Anthropic's path"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"], "max_tokens is too large",
        "OpenAI error shape: {body}"
    );
    assert!(body["error"]["type"].is_string(), "{body}");
}
