//! `spawn_app()` and the mock upstream shared by the integration tests.

use std::{
    collections::HashMap,
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use app::{Application, config::Settings};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "test-admin-password";
pub const PROXY_KEY: &str = "test-proxy-key";

/// A running server with a fresh SQLite database.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub token: String,
    pub handle: actix_web::dev::ServerHandle,
    pub state: web::Data<app::state::AppState>,
    _data: tempfile::TempDir,
}

/// Settings for a test server: port 0, a temp database, short timeouts.
pub fn test_settings(data: &std::path::Path, extra: &[(&str, &str)]) -> Settings {
    let mut values: std::collections::BTreeMap<String, String> = app::config::VARIABLES
        .iter()
        .filter_map(|(name, default)| default.map(|d| ((*name).to_owned(), d.to_owned())))
        .collect();
    for (name, value) in [
        ("BACKEND_HOST", "127.0.0.1"),
        ("BACKEND_PORT", "0"),
        ("WORKERS", "2"),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("JWT_SECRET", "integration-test-secret-0123456789"),
        ("GLOBAL_PROXY_KEYS", "other-key,test-proxy-key"),
        ("PROXY_TIMEOUT", "2"),
        ("STREAM_IDLE_TIMEOUT", "2"),
        ("USAGE_FLUSH_SECONDS", "1"),
        ("MAX_BODY_BYTES", "65536"),
    ] {
        values.insert(name.to_owned(), value.to_owned());
    }
    values.insert(
        "DATABASE_PATH".to_owned(),
        data.join("test.db").display().to_string(),
    );
    for (name, value) in extra {
        values.insert((*name).to_owned(), (*value).to_owned());
    }
    Settings::from_raw(&values).expect("test settings are valid")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap(), extra).await
}

/// A server whose database is `data/test.db` (which a test may have prepared).
pub async fn spawn_app_in(data: tempfile::TempDir, extra: &[(&str, &str)]) -> TestApp {
    spawn_app_in_wrapping_store(data, extra, |store| store).await
}

/// Like [`spawn_app_with`], over the real store wrapped by `wrap` (to count what it reads).
pub async fn spawn_app_wrapping_store(
    extra: &[(&str, &str)],
    wrap: impl FnOnce(Arc<dyn domain::ProxyStore>) -> Arc<dyn domain::ProxyStore>,
) -> TestApp {
    spawn_app_in_wrapping_store(tempfile::tempdir().unwrap(), extra, wrap).await
}

async fn spawn_app_in_wrapping_store(
    data: tempfile::TempDir,
    extra: &[(&str, &str)],
    wrap: impl FnOnce(Arc<dyn domain::ProxyStore>) -> Arc<dyn domain::ProxyStore>,
) -> TestApp {
    spawn_app_mapping_ports(data, extra, |ports| ports.store = wrap(ports.store.clone())).await
}

/// Like [`spawn_app_with`], over the real request log wrapped by `wrap` (to slow it down).
pub async fn spawn_app_wrapping_request_log(
    extra: &[(&str, &str)],
    wrap: impl FnOnce(Arc<dyn domain::RequestLog>) -> Arc<dyn domain::RequestLog>,
) -> TestApp {
    spawn_app_mapping_ports(tempfile::tempdir().unwrap(), extra, |ports| {
        ports.request_log = wrap(ports.request_log.clone());
    })
    .await
}

async fn spawn_app_mapping_ports(
    data: tempfile::TempDir,
    extra: &[(&str, &str)],
    map: impl FnOnce(&mut app::wiring::Ports),
) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        app::telemetry::init("debug", false);
    }
    let settings = test_settings(data.path(), extra);
    let mut ports = app::wiring::connect(&settings)
        .await
        .expect("backends connect");
    map(&mut ports);
    let application = Application::build_with_ports(settings, ports)
        .await
        .expect("server builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let handle = application.handle();
    let state = application.state();
    tokio::spawn(application.run_until_stopped());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut app = TestApp {
        address,
        client,
        token: String::new(),
        handle,
        state,
        _data: data,
    };
    app.token = app
        .login(ADMIN_PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app
}

/// Stops the server with the test: its workers run on threads of their own, which would
/// otherwise keep serving (and keep their database connections) until the test binary exits.
impl Drop for TestApp {
    fn drop(&mut self) {
        // The stop command is sent by the call itself; nothing is left to wait for.
        let _stopping = self.handle.stop(false);
    }
}

impl TestApp {
    /// The directory holding the test database (`test.db`).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn login(&self, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/admin/login"))
            .json(&json!({"username": "admin", "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(&format!("/admin{path}")))
            .bearer_auth(&self.token)
    }

    pub async fn create_config(&self, body: &Value) -> reqwest::Response {
        self.admin(reqwest::Method::POST, "/proxy-configs")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a GENERIC config pointing at `target` and returns its id.
    pub async fn generic_config(
        &self,
        slug: &str,
        method: &str,
        target: &str,
        location: &str,
        name: &str,
    ) -> i64 {
        let response = self
            .create_config(&json!({
                "name": slug, "slug": slug, "config_type": "GENERIC", "method": method,
                "target_url": target, "api_key_location": location, "api_key_name": name,
            }))
            .await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap()
    }

    pub async fn add_keys(&self, config: i64, keys: &[&str]) -> Value {
        self.admin(
            reqwest::Method::POST,
            &format!("/proxy-configs/{config}/keys/batch"),
        )
        .json(&json!({ "keys": keys }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    /// Every key of a config, following `next_cursor` from page to page.
    pub async fn list_keys(&self, config: i64) -> Vec<Value> {
        let mut keys = Vec::new();
        let mut query = String::new();
        loop {
            let (status, page) = self.list_keys_page(config, &query).await;
            assert_eq!(status, 200, "{page}");
            keys.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("cursor={cursor}"),
                None => return keys,
            }
        }
    }

    /// One page of `GET /admin/proxy-configs/{config}/keys?{query}`: the status and the body.
    pub async fn list_keys_page(&self, config: i64, query: &str) -> (u16, Value) {
        let response = self
            .admin(
                reqwest::Method::GET,
                &format!("/proxy-configs/{config}/keys?{query}"),
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// A request to the LLM proxy with the proxy key as an OpenAI SDK sends it.
    pub fn llm(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(PROXY_KEY)
    }

    pub fn proxy(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-Proxy-Key", PROXY_KEY)
    }
}

/// Creates an LLM config for the upstream at `base` speaking `api_format`, with `keys` in its
/// pool, and returns its id.
pub async fn llm_config(
    app: &TestApp,
    slug: &str,
    base: &str,
    api_format: &str,
    keys: &[&str],
) -> i64 {
    let response = app
        .create_config(&json!({"name": slug, "slug": slug, "config_type": "LLM",
            "target_base_url": base, "api_format": api_format}))
        .await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(id, keys).await;
    id
}

/// What the mock upstream answers for one key.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// 200 with a small JSON body naming the key.
    Ok,
    /// This status, body and headers.
    Status(u16, &'static str, Vec<(&'static str, &'static str)>),
    /// Waits before answering 200.
    Slow(Duration),
    /// Server-sent events: `count` events, `gap` apart.
    Events { count: usize, gap: Duration },
    /// A body of this many bytes, streamed in 64 KiB chunks.
    Download(usize),
    /// `first` events, then silence for `silence`, then one more event.
    Stall { first: usize, silence: Duration },
    /// A minimal OpenAI API: `GET …/models`, `POST …/chat/completions` (JSON or SSE).
    OpenAiApi,
    /// A minimal Anthropic Messages API (JSON or SSE, a tool call when tools are offered).
    AnthropicApi,
    /// A minimal Gemini API (generateContent, streamGenerateContent?alt=sse, function calls).
    GeminiApi,
}

/// One request the mock received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub key: String,
    pub body_len: usize,
}

#[derive(Default)]
struct MockState {
    behaviors: Mutex<HashMap<String, Behavior>>,
    /// Behaviors by request path, ahead of the per-key ones.
    path_behaviors: Mutex<HashMap<String, Behavior>>,
    received: Mutex<Vec<Received>>,
    /// When each streamed event was handed to the connection.
    sent_at: Mutex<Vec<std::time::Instant>>,
    /// Streams dropped before their last event (the client went away).
    abandoned: Mutex<Vec<std::time::Instant>>,
    /// Slow answers being waited out now, and the most at once.
    slow_in_flight: std::sync::atomic::AtomicUsize,
    slow_peak: std::sync::atomic::AtomicUsize,
}

/// Records a stream dropped before it finished.
struct AbandonGuard {
    state: web::Data<MockState>,
    finished: bool,
}

impl AbandonGuard {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.state
                .abandoned
                .lock()
                .unwrap()
                .push(std::time::Instant::now());
        }
    }
}

/// A scriptable upstream on a free local port; it finds the key in `x-api-key`, the `apikey`
/// query parameter or `Authorization: Bearer`.
#[derive(Clone)]
pub struct MockUpstream {
    pub base: String,
    state: Arc<MockState>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let state = Arc::new(MockState::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .app_data(web::PayloadConfig::new(usize::MAX))
                .default_service(web::to(mock_handler))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        MockUpstream {
            base: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    pub fn on(&self, key: &str, behavior: Behavior) {
        self.state
            .behaviors
            .lock()
            .unwrap()
            .insert(key.to_owned(), behavior);
    }

    /// Answers every request to `path` (whatever the key) this way.
    pub fn on_path(&self, path: &str, behavior: Behavior) {
        self.state
            .path_behaviors
            .lock()
            .unwrap()
            .insert(path.to_owned(), behavior);
    }

    /// The most slow answers (`Behavior::Slow`) the mock was waiting out at once.
    pub fn slow_peak(&self) -> usize {
        self.state
            .slow_peak
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn event_times(&self) -> Vec<std::time::Instant> {
        self.state.sent_at.lock().unwrap().clone()
    }

    pub fn abandoned(&self) -> Vec<std::time::Instant> {
        self.state.abandoned.lock().unwrap().clone()
    }

    pub fn keys_used(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.received() {
            *counts.entry(r.key).or_insert(0) += 1;
        }
        counts
    }
}

async fn mock_handler(
    request: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<MockState>,
) -> HttpResponse {
    let mut body_len = 0;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.unwrap_or_default();
        body_len += chunk.len();
        if body.len() < 1 << 20 {
            body.extend_from_slice(&chunk);
        }
    }
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let query_key = url::form_urlencoded::parse(request.query_string().as_bytes())
        .find(|(n, _)| n == "apikey")
        .map(|(_, v)| v.into_owned());
    let key = headers
        .get("x-api-key")
        .or_else(|| headers.get("x-goog-api-key"))
        .cloned()
        .or(query_key)
        .or_else(|| {
            headers
                .get("authorization")
                .map(|v| v.trim_start_matches("Bearer ").to_owned())
        })
        .unwrap_or_default();
    state.received.lock().unwrap().push(Received {
        path: request.path().to_owned(),
        query: request.query_string().to_owned(),
        headers,
        key: key.clone(),
        body_len,
    });
    let by_path = state
        .path_behaviors
        .lock()
        .unwrap()
        .get(request.path())
        .cloned();
    let behavior = by_path
        .or_else(|| state.behaviors.lock().unwrap().get(&key).cloned())
        .unwrap_or(Behavior::Ok);
    match behavior {
        Behavior::Ok => HttpResponse::Ok().json(json!({ "key": key, "body_len": body_len })),
        Behavior::Status(code, body, headers) => {
            let mut response =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap());
            for header in headers {
                response.insert_header(header);
            }
            response.content_type("application/json").body(body)
        }
        Behavior::Slow(delay) => {
            use std::sync::atomic::Ordering::SeqCst;
            let now = state.slow_in_flight.fetch_add(1, SeqCst) + 1;
            state.slow_peak.fetch_max(now, SeqCst);
            tokio::time::sleep(delay).await;
            state.slow_in_flight.fetch_sub(1, SeqCst);
            HttpResponse::Ok().json(json!({ "key": key }))
        }
        Behavior::Events { count, gap } => {
            let guard = AbandonGuard {
                state: state.clone(),
                finished: false,
            };
            let events =
                futures_util::stream::unfold((0, guard), move |(n, mut guard)| async move {
                    if n == count {
                        guard.finish();
                        return None;
                    }
                    if n > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    guard
                        .state
                        .sent_at
                        .lock()
                        .unwrap()
                        .push(std::time::Instant::now());
                    Some((
                        Ok::<_, actix_web::Error>(Bytes::from(format!("data: {n}\n\n"))),
                        (n + 1, guard),
                    ))
                });
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .streaming(events)
        }
        Behavior::OpenAiApi => openai_api(&request, &body),
        Behavior::AnthropicApi => anthropic_api(&body),
        Behavior::GeminiApi => gemini_api(&request, &body),
        Behavior::Stall { first, silence } => {
            let events = futures_util::stream::unfold(0, move |n| async move {
                if n > first {
                    return None;
                }
                if n == first {
                    tokio::time::sleep(silence).await;
                }
                Some((
                    Ok::<_, actix_web::Error>(Bytes::from(format!("data: {n}\n\n"))),
                    n + 1,
                ))
            });
            HttpResponse::Ok()
                .content_type("text/event-stream")
                .streaming(events)
        }
        Behavior::Download(size) => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = futures_util::stream::unfold(size, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(chunk.len());
                    Some((Ok::<_, actix_web::Error>(chunk.slice(..n)), left - n))
                }
            });
            HttpResponse::Ok()
                .content_type("application/octet-stream")
                .streaming(chunks)
        }
    }
}

/// Answers like the OpenAI API, enough for the official SDK.
fn openai_api(request: &HttpRequest, body: &[u8]) -> HttpResponse {
    if request.path().ends_with("/models") {
        return HttpResponse::Ok().json(json!({"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 1_700_000_000, "owned_by": "mock"}
        ]}));
    }
    let request_body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let created = 1_700_000_000;
    if request_body["stream"] == true {
        let chunks: Vec<Result<Bytes, actix_web::Error>> = ["Hel", "lo"]
            .iter()
            .map(|piece| {
                let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created,
                    "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
                Ok(Bytes::from(format!("data: {chunk}\n\n")))
            })
            .chain(std::iter::once(Ok(Bytes::from_static(b"data: [DONE]\n\n"))))
            .collect();
        // As OpenAI does with `stream_options.include_usage`: a last chunk without choices.
        let usage = (request_body["stream_options"]["include_usage"] == true).then(|| {
            let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created,
                "model": "gpt-4o-mini", "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
            Ok(Bytes::from(format!("data: {chunk}\n\n")))
        });
        let done = chunks.len() - 1;
        let mut chunks = chunks;
        if let Some(usage) = usage {
            chunks.insert(done, usage);
        }
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .streaming(futures_util::stream::iter(chunks));
    }
    HttpResponse::Ok().json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": created, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    }))
}

fn sse(events: Vec<String>) -> HttpResponse {
    let chunks: Vec<Result<Bytes, actix_web::Error>> =
        events.into_iter().map(|e| Ok(Bytes::from(e))).collect();
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(futures_util::stream::iter(chunks))
}

/// Answers like Anthropic's Messages API: text, or a `get_weather` tool call when tools are offered.
fn anthropic_api(body: &[u8]) -> HttpResponse {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let wants_tool = request["tools"].as_array().is_some_and(|t| !t.is_empty());
    let usage = json!({"input_tokens": 5, "output_tokens": 2});
    if request["stream"] != true {
        let content = if wants_tool {
            json!([{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}])
        } else {
            json!([{"type": "text", "text": "Hello"}])
        };
        return HttpResponse::Ok().json(json!({"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-test", "content": content, "stop_reason": if wants_tool { "tool_use" } else { "end_turn" },
            "stop_sequence": null, "usage": usage}));
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1",
        "type": "message", "role": "assistant", "model": "claude-test", "content": [], "stop_reason": null,
        "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 0}}}),
    )];
    if wants_tool {
        events.push(event("content_block_start", json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}})));
        for piece in ["{\"city\": ", "\"Paris\"}"] {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
    } else {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in ["Hel", "lo"] {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": if wants_tool { "tool_use" } else { "end_turn" }, "stop_sequence": null},
        "usage": {"output_tokens": 2}})));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    sse(events)
}

/// Answers like the Gemini API: text, or a `get_weather` function call when tools are offered.
fn gemini_api(request: &HttpRequest, body: &[u8]) -> HttpResponse {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let wants_tool = parsed["tools"].as_array().is_some_and(|t| !t.is_empty());
    let candidate = |parts: Value, finish: Option<&str>| {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(reason) = finish {
            candidate["finishReason"] = json!(reason);
        }
        candidate
    };
    let usage = json!({"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7});
    let call = json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]);
    if request.path().ends_with(":streamGenerateContent") {
        let chunks: Vec<Value> = if wants_tool {
            vec![json!({"candidates": [candidate(call, Some("STOP"))], "usageMetadata": usage})]
        } else {
            vec![
                json!({"candidates": [candidate(json!([{"text": "Hel"}]), None)]}),
                json!({"candidates": [candidate(json!([{"text": "lo"}]), Some("STOP"))], "usageMetadata": usage}),
            ]
        };
        return sse(chunks
            .into_iter()
            .map(|c| format!("data: {c}\r\n\r\n"))
            .collect());
    }
    let parts = if wants_tool {
        call
    } else {
        json!([{"text": "Hello"}])
    };
    HttpResponse::Ok().json(json!({"candidates": [candidate(parts, Some("STOP"))], "usageMetadata": usage, "modelVersion": "gemini-test"}))
}
