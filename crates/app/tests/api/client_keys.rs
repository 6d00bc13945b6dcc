//! Client keys end to end (SPEC §7): the admin API (secret shown once, rotate, delete), the keys
//! accepted wherever a global proxy key is, 401/403 before any upstream call, every limit with
//! `Retry-After`, concurrency slots given back on success, error and disconnect, tokens counted
//! from the upstream's usage in every format (converted streams included), usage flushed to the
//! store, and no store read per proxied request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use domain::{
    ClientKey, ClientKeyId, ClientKeySpec, ClientKeyStore, ClientUsageDelta, IssuedSecret, Result,
};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Behavior, MockUpstream, PROXY_KEY, TestApp, spawn_app, test_settings};

/// Creates a client key and returns (id, secret).
async fn client_key(app: &TestApp, body: Value) -> (i64, String) {
    let response = app
        .admin(Method::POST, "/client-keys")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let key: Value = response.json().await.unwrap();
    (
        key["id"].as_i64().unwrap(),
        key["secret"].as_str().unwrap().to_owned(),
    )
}

async fn generic(app: &TestApp, mock: &MockUpstream, slug: &str, key: &str) -> i64 {
    let id = app
        .generic_config(slug, "GET", &mock.base, "header", "x-api-key")
        .await;
    app.add_keys(id, &[key]).await;
    id
}

async fn llm(app: &TestApp, slug: &str, base: &str, api_format: &str, output: &str) -> i64 {
    let response = app
        .create_config(&json!({"name": slug, "slug": slug, "config_type": "LLM",
            "target_base_url": base, "api_format": api_format, "output_format": output}))
        .await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(id, &[&format!("sk-{slug}")]).await;
    id
}

fn proxied(app: &TestApp, slug: &str, secret: &str) -> reqwest::RequestBuilder {
    app.client
        .get(app.url(&format!("/proxy/{slug}/x")))
        .header("X-Proxy-Key", secret)
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["error"]["code"]
        .as_str()
        .or(body["error"]["type"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_secret_is_shown_once_and_rotate_and_delete_invalidate_it() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    generic(&app, &mock, "svc", "up-1").await;
    let response = app
        .admin(Method::POST, "/client-keys")
        .json(&json!({"name": "team-a", "rpm": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("akr-") && secret.len() >= 36, "{secret}");
    assert_eq!(created["key_prefix"], secret[..12]);
    assert_eq!(created["rpm"], 100);
    assert_eq!(created["budget_period"], Value::Null);
    assert_eq!(created["request_count"], 0);
    let id = created["id"].as_i64().unwrap();

    let read: Value = app
        .admin(Method::GET, &format!("/client-keys/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(read.get("secret").is_none(), "GET never shows the secret");
    let list: Value = app
        .admin(Method::GET, "/client-keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("secret").is_none());
    assert!(!list.to_string().contains(&secret));

    assert_eq!(status(proxied(&app, "svc", &secret)).await, 200);
    assert_eq!(
        mock.received().pop().unwrap().key,
        "up-1",
        "the upstream gets its own key"
    );
    assert!(
        !mock
            .received()
            .iter()
            .any(|r| r.headers.values().any(|v| v.contains(&secret))),
        "the client key never goes upstream"
    );

    let rotated: Value = app
        .admin(Method::POST, &format!("/client-keys/{id}/rotate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(status(proxied(&app, "svc", &secret)).await, 401);
    assert_eq!(status(proxied(&app, "svc", &new_secret)).await, 200);

    // PUT takes the create body; the secret stays.
    let replaced = app
        .admin(Method::PUT, &format!("/client-keys/{id}"))
        .json(&json!({"name": "team-a2", "max_concurrency": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(replaced["name"], "team-a2");
    assert_eq!(replaced["rpm"], Value::Null);
    assert!(replaced.get("secret").is_none());
    assert_eq!(status(proxied(&app, "svc", &new_secret)).await, 200);

    let duplicate = app
        .admin(Method::POST, "/client-keys")
        .json(&json!({"name": "team-a2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    let invalid = app
        .admin(Method::POST, "/client-keys")
        .json(&json!({"name": "x", "rpm": 0, "token_budget": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    let unauthenticated = app
        .client
        .get(app.url("/admin/client-keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let deleted = app
        .admin(Method::DELETE, &format!("/client-keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(status(proxied(&app, "svc", &new_secret)).await, 401);
    let gone = app
        .admin(Method::GET, &format!("/client-keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn a_client_key_is_accepted_wherever_a_global_key_is() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("sk-oai", Behavior::OpenAiApi);
    mock.on("sk-ant", Behavior::AnthropicApi);
    mock.on("sk-gem", Behavior::GeminiApi);
    generic(&app, &mock, "svc", "up-1").await;
    llm(&app, "oai", &mock.base, "openai_compatible", "none").await;
    llm(&app, "ant", &mock.base, "anthropic_native", "none").await;
    llm(&app, "gem", &mock.base, "gemini_native", "none").await;
    let (_, secret) = client_key(&app, json!({"name": "everywhere"})).await;
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

    assert_eq!(status(proxied(&app, "svc", &secret)).await, 200);
    let bearer = app
        .client
        .post(app.url("/llm/oai/v1/chat/completions"))
        .bearer_auth(&secret)
        .json(&chat);
    assert_eq!(status(bearer).await, 200);
    let mut with_body_key = chat.clone();
    with_body_key["api_key"] = json!(secret);
    let body_key = app
        .client
        .post(app.url("/llm/oai/v1/chat/completions"))
        .json(&with_body_key);
    assert_eq!(status(body_key).await, 200);
    let messages =
        json!({"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let anthropic = app
        .client
        .post(app.url("/llm/ant/v1/messages"))
        .header("x-api-key", &secret)
        .json(&messages);
    assert_eq!(status(anthropic).await, 200);
    let anthropic_bearer = app
        .client
        .post(app.url("/llm/ant/v1/messages"))
        .bearer_auth(&secret)
        .json(&messages);
    assert_eq!(status(anthropic_bearer).await, 200);
    let contents = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let gemini = app
        .client
        .post(app.url("/llm/gem/v1beta/models/g:generateContent"))
        .header("x-goog-api-key", &secret)
        .json(&contents);
    assert_eq!(status(gemini).await, 200);
    let gemini_query = app
        .client
        .post(app.url(&format!(
            "/llm/gem/v1beta/models/g:generateContent?key={secret}"
        )))
        .json(&contents);
    assert_eq!(status(gemini_query).await, 200);
    assert!(
        !mock
            .received()
            .iter()
            .any(|r| r.query.contains(&secret) || r.headers.values().any(|v| v.contains(&secret))),
        "the client key never goes upstream"
    );
    // Global keys keep working beside client keys.
    assert_eq!(status(proxied(&app, "svc", PROXY_KEY)).await, 200);
    assert_eq!(status(proxied(&app, "svc", "akr-not-a-key")).await, 401);
}

#[tokio::test]
async fn expired_and_disabled_keys_get_401_and_other_configs_403_before_any_upstream_call() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("sk-ant", Behavior::AnthropicApi);
    let allowed = generic(&app, &mock, "allowed", "up-1").await;
    generic(&app, &mock, "other", "up-2").await;
    llm(&app, "ant", &mock.base, "anthropic_native", "none").await;
    let (_, expired) = client_key(
        &app,
        json!({"name": "expired", "expires_at": "2020-01-01T00:00:00Z"}),
    )
    .await;
    let (_, disabled) = client_key(&app, json!({"name": "disabled", "is_active": false})).await;
    let (_, scoped) = client_key(
        &app,
        json!({"name": "scoped", "allowed_config_ids": [allowed]}),
    )
    .await;
    let before = mock.received().len();

    for secret in [&expired, &disabled] {
        let response = proxied(&app, "allowed", secret).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(error_code(response).await, "unauthorized");
    }
    let forbidden = proxied(&app, "other", &scoped).send().await.unwrap();
    assert_eq!(forbidden.status(), 403);
    assert_eq!(error_code(forbidden).await, "config_not_allowed");
    // The LLM routes answer in the client's format (Anthropic here).
    let anthropic = app
        .client
        .post(app.url("/llm/ant/v1/messages"))
        .header("x-api-key", &scoped)
        .json(&json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic.status(), 403);
    let body: Value = anthropic.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    let expired_llm = app
        .client
        .post(app.url("/llm/ant/v1/messages"))
        .header("x-api-key", &expired)
        .json(&json!({"model": "c", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(expired_llm.status(), 401);
    assert_eq!(mock.received().len(), before, "no upstream call was made");
    assert_eq!(status(proxied(&app, "allowed", &scoped)).await, 200);
}

#[tokio::test]
async fn rpm_admits_exactly_its_limit_then_429_with_retry_after() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    generic(&app, &mock, "svc", "up-1").await;
    let (_, secret) = client_key(&app, json!({"name": "rpm", "rpm": 3})).await;
    let before = mock.received().len();
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let response = proxied(&app, "svc", &secret).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 && refused.is_none() {
            refused = Some(response);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let refused = refused.unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((19..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(refused).await, "client_rate_limited");
    assert_eq!(
        mock.received().len() - before,
        3,
        "refused requests never reach the upstream"
    );
}

/// Sends until the key gets a slot again (a slot is given back right after the exchange ends).
async fn admitted_within(app: &TestApp, slug: &str, secret: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let status = status(proxied(app, slug, secret)).await;
        if status != 429 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_concurrency_slot_is_given_back_on_success_error_and_disconnect() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("slow", Behavior::Slow(Duration::from_millis(600)));
    mock.on("bad", Behavior::Status(400, r#"{"error":"bad"}"#, vec![]));
    mock.on(
        "stream",
        Behavior::Events {
            count: 50,
            gap: Duration::from_millis(100),
        },
    );
    generic(&app, &mock, "slow", "slow").await;
    generic(&app, &mock, "ok", "up-ok").await;
    generic(&app, &mock, "bad", "bad").await;
    generic(&app, &mock, "stream", "stream").await;
    let dead = app
        .generic_config("dead", "GET", "http://127.0.0.1:9", "header", "x-api-key")
        .await;
    app.add_keys(dead, &["dead"]).await;
    let (_, secret) =
        client_key(&app, json!({"name": "one-at-a-time", "max_concurrency": 1})).await;

    // Success: the slot is held while the request is in flight.
    let in_flight = {
        let request = proxied(&app, "slow", &secret);
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = proxied(&app, "ok", &secret).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(error_code(refused).await, "client_concurrency_limit");
    assert_eq!(in_flight.await.unwrap(), 200);
    assert!(admitted_within(&app, "ok", &secret, Duration::from_secs(2)).await);

    // Upstream error answer and proxy error (unreachable upstream).
    assert_eq!(status(proxied(&app, "bad", &secret)).await, 400);
    assert!(admitted_within(&app, "ok", &secret, Duration::from_secs(2)).await);
    assert_eq!(status(proxied(&app, "dead", &secret)).await, 502);
    assert!(admitted_within(&app, "ok", &secret, Duration::from_secs(2)).await);

    // The client leaves mid-stream.
    let response = proxied(&app, "stream", &secret).send().await.unwrap();
    let mut body = response.bytes_stream();
    assert!(body.next().await.is_some());
    assert_eq!(
        status(proxied(&app, "ok", &secret)).await,
        429,
        "still streaming"
    );
    drop(body);
    assert!(
        admitted_within(&app, "ok", &secret, Duration::from_secs(3)).await,
        "the slot came back after the disconnect"
    );
}

/// Reads a client key's token count from the admin API until it reaches `expected`.
async fn token_count(app: &TestApp, id: i64, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let key: Value = app
            .admin(Method::GET, &format!("/client-keys/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tokens = key["token_count"].as_u64().unwrap();
        if tokens >= expected || Instant::now() > deadline {
            return tokens;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn tokens_and_budgets_count_the_upstream_usage_in_every_format_streamed_or_not() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("sk-oai", Behavior::OpenAiApi);
    mock.on("sk-ant", Behavior::AnthropicApi);
    mock.on("sk-gem", Behavior::GeminiApi);
    mock.on("sk-conv", Behavior::AnthropicApi);
    llm(&app, "oai", &mock.base, "openai_compatible", "none").await;
    llm(&app, "ant", &mock.base, "anthropic_native", "none").await;
    llm(&app, "gem", &mock.base, "gemini_native", "none").await;
    // An OpenAI client in front of an Anthropic upstream: a converted stream.
    llm(&app, "conv", &mock.base, "anthropic_native", "openai").await;
    let chat = |stream: bool, usage: bool| {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
        if usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    };
    let messages = |stream: bool| json!({"model": "c", "max_tokens": 10, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
    let contents = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    // (case, path, auth header, body, tokens the mock reports)
    let cases: Vec<(&str, &str, &str, Value, u64)> = vec![
        (
            "openai json",
            "/llm/oai/v1/chat/completions",
            "authorization",
            chat(false, false),
            4,
        ),
        (
            // The mock's usage chunk reports 3 + 2 (2, not the body's 1, so a test can tell
            // that the stream's usage was read).
            "openai stream",
            "/llm/oai/v1/chat/completions",
            "authorization",
            chat(true, true),
            5,
        ),
        (
            "anthropic json",
            "/llm/ant/v1/messages",
            "x-api-key",
            messages(false),
            7,
        ),
        (
            "anthropic stream",
            "/llm/ant/v1/messages",
            "x-api-key",
            messages(true),
            7,
        ),
        (
            "gemini json",
            "/llm/gem/v1beta/models/g:generateContent",
            "x-goog-api-key",
            contents.clone(),
            7,
        ),
        (
            "gemini stream",
            "/llm/gem/v1beta/models/g:streamGenerateContent?alt=sse",
            "x-goog-api-key",
            contents.clone(),
            7,
        ),
        (
            "converted stream",
            "/llm/conv/v1/chat/completions",
            "authorization",
            chat(true, false),
            7,
        ),
    ];
    for (case, path, header, body, tokens) in cases {
        let (id, secret) = client_key(
            &app,
            json!({"name": case, "token_budget": tokens, "budget_period": "day"}),
        )
        .await;
        let value = if header == "authorization" {
            format!("Bearer {secret}")
        } else {
            secret.clone()
        };
        let send = || {
            app.client
                .post(app.url(path))
                .header(header, &value)
                .json(&body)
                .send()
        };
        let response = send().await.unwrap();
        assert_eq!(response.status(), 200, "{case}");
        response.bytes().await.unwrap();
        assert_eq!(token_count(&app, id, tokens).await, tokens, "{case}");
        // The budget is spent: the next request is refused before any upstream call.
        let before = mock.received().len();
        let refused = send().await.unwrap();
        assert_eq!(refused.status(), 429, "{case}");
        assert!(refused.headers().contains_key("retry-after"), "{case}");
        let text = refused.text().await.unwrap();
        // OpenAI answers carry the code; Anthropic and Gemini bodies use their own error
        // types, with the proxy's message.
        assert!(text.contains("token_budget"), "{case}: {text}");
        assert_eq!(mock.received().len(), before, "{case}");
        let key: Value = app
            .admin(Method::GET, &format!("/client-keys/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(key["budget_used"], tokens, "{case}");
    }
}

#[tokio::test]
async fn tpm_refuses_once_a_minutes_worth_of_tokens_was_used() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("sk-oai", Behavior::OpenAiApi);
    llm(&app, "oai", &mock.base, "openai_compatible", "none").await;
    let (id, secret) = client_key(&app, json!({"name": "tpm", "tpm": 6})).await;
    let send = || {
        app.client
            .post(app.url("/llm/oai/v1/chat/completions"))
            .bearer_auth(&secret)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // 4 tokens, then 8: over the 6 a minute allows.
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(token_count(&app, id, 4).await, 4);
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(token_count(&app, id, 8).await, 8);
    let refused = send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "client_rate_limited", "{body}");
}

#[tokio::test]
async fn usage_is_aggregated_in_memory_and_flushed_to_the_store() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    generic(&app, &mock, "svc", "up-1").await;
    let (id, secret) = client_key(&app, json!({"name": "counted"})).await;
    for _ in 0..3 {
        assert_eq!(status(proxied(&app, "svc", &secret)).await, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stored = app
            .state
            .client_keys
            .store()
            .get_client_key(ClientKeyId(id))
            .await
            .unwrap();
        if stored.usage.request_count == 3 {
            assert!(stored.usage.last_used_at.is_some());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usage was not flushed: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key: Value = app
        .admin(Method::GET, &format!("/client-keys/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(key["request_count"], 3);
    assert!(key["last_used_at"].is_string());
}

/// Counts every read of the client-key store.
struct CountingClientKeys {
    inner: Arc<dyn ClientKeyStore>,
    reads: Arc<AtomicUsize>,
}

#[async_trait]
impl ClientKeyStore for CountingClientKeys {
    async fn create_client_key(
        &self,
        spec: ClientKeySpec,
        secret: IssuedSecret,
    ) -> Result<ClientKey> {
        self.inner.create_client_key(spec, secret).await
    }
    async fn list_client_keys(&self) -> Result<Vec<ClientKey>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list_client_keys().await
    }
    async fn get_client_key(&self, id: ClientKeyId) -> Result<ClientKey> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_client_key(id).await
    }
    async fn replace_client_key(&self, id: ClientKeyId, spec: ClientKeySpec) -> Result<ClientKey> {
        self.inner.replace_client_key(id, spec).await
    }
    async fn rotate_client_key(&self, id: ClientKeyId, secret: IssuedSecret) -> Result<ClientKey> {
        self.inner.rotate_client_key(id, secret).await
    }
    async fn delete_client_key(&self, id: ClientKeyId) -> Result<ClientKey> {
        self.inner.delete_client_key(id).await
    }
    async fn apply_client_usage(&self, deltas: &[ClientUsageDelta]) -> Result<()> {
        self.inner.apply_client_usage(deltas).await
    }
}

#[tokio::test]
async fn proxied_requests_with_a_client_key_read_no_store() {
    let data = tempfile::tempdir().unwrap();
    let settings = test_settings(data.path(), &[("USAGE_FLUSH_SECONDS", "3600")]);
    let mut ports = app::wiring::connect(&settings).await.unwrap();
    let reads = Arc::new(AtomicUsize::new(0));
    let snapshot_loads = Arc::new(AtomicUsize::new(0));
    ports.client_keys = Arc::new(CountingClientKeys {
        inner: ports.client_keys,
        reads: reads.clone(),
    });
    ports.store = Arc::new(crate::hot_path::CountingStore {
        inner: ports.store,
        snapshot_loads: snapshot_loads.clone(),
        key_rows: Arc::default(),
    });
    let application = app::Application::build_with_ports(settings, ports)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until_stopped());
    let client = reqwest::Client::new();
    let token: Value = client
        .post(format!("{base}/admin/login"))
        .json(&json!({"username": "admin", "password": crate::helpers::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let mock = MockUpstream::start().await;
    let config: Value = client
        .post(format!("{base}/admin/proxy-configs"))
        .bearer_auth(&token)
        .json(
            &json!({"name": "svc", "slug": "svc", "config_type": "GENERIC", "method": "GET",
            "target_url": mock.base, "api_key_location": "header", "api_key_name": "x-api-key"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    client
        .post(format!("{base}/admin/proxy-configs/{}/keys", config["id"]))
        .bearer_auth(&token)
        .json(&json!({"key_value": "up-1"}))
        .send()
        .await
        .unwrap();
    let created: Value = client
        .post(format!("{base}/admin/client-keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "hot", "rpm": 1000, "max_concurrency": 10, "tpm": 100000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    // Let the change notice's rebuild settle before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reads_before = reads.load(Ordering::SeqCst);
    let loads_before = snapshot_loads.load(Ordering::SeqCst);
    for _ in 0..50 {
        let response = client
            .get(format!("{base}/proxy/svc/x"))
            .header("X-Proxy-Key", &secret)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        reads.load(Ordering::SeqCst),
        reads_before,
        "no client-key store read per request"
    );
    assert!(
        snapshot_loads.load(Ordering::SeqCst) <= loads_before + 1,
        "at most the first request loads the config snapshot"
    );
}
