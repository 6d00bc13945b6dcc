//! The proxies under hostile or careless clients: bodies refused before they are read, slow
//! bodies timed out, the buffer budget, and credentials that must never travel upstream.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{MockUpstream, PROXY_KEY, TestApp, llm_config, spawn_app_with};

/// Sends a raw request head (and an optional start of the body) on a new connection.
async fn send_head(app: &TestApp, head: &str, body_start: &[u8]) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body_start).await.unwrap();
    stream
}

/// Reads until the server closes the connection (bounded), returning what it sent.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open: {:?}",
        String::from_utf8_lossy(&answer)
    );
    String::from_utf8_lossy(&answer).into_owned()
}

fn head(path: &str, auth: Option<&str>, length: u64) -> String {
    let auth = auth.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn an_oversized_content_length_is_refused_at_once_and_the_connection_closed() {
    let app = spawn_app_with(&[]).await;
    let mock = MockUpstream::start().await;
    llm_config(&app, "huge", &mock.base, "openai_compatible", &["sk-up-1"]).await;
    // Without a credential in the head an OpenAI client may still carry one in its body, so
    // that request is refused for its size too, before a byte is read.
    for (auth, expected) in [
        (Some(PROXY_KEY), "413"),
        (None, "413"),
        (Some("not-a-proxy-key"), "401"),
    ] {
        let mut stream = send_head(
            &app,
            &head("/llm/huge/v1/chat/completions", auth, 1_000_000_000_000),
            b"",
        )
        .await;
        let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{auth:?}: {answer}"
        );
    }
    assert!(mock.received().is_empty());
}

/// The built binary serving on a free port, for measurements of its own memory and of what it
/// writes to its log.
struct ServerProcess {
    child: std::process::Child,
    address: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _data: tempfile::TempDir,
}

impl ServerProcess {
    fn start(env: &[(&str, &str)]) -> ServerProcess {
        use std::io::{BufRead, BufReader};
        let data = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
            .current_dir(data.path())
            .env_clear()
            .envs([
                ("BACKEND_PORT", "0"),
                ("BACKEND_HOST", "127.0.0.1"),
                ("WORKERS", "2"),
                ("LOG_LEVEL", "info"),
                ("ADMIN_PASSWORD", crate::helpers::ADMIN_PASSWORD),
                ("GLOBAL_PROXY_KEYS", PROXY_KEY),
            ])
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.split("port=")
                    .nth(1)
                    .and_then(|p| p.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok())
            })
            .expect("the server logs its port");
        // Keep reading its log: a closed pipe would fail the server's next log line.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        ServerProcess {
            child,
            address: format!("127.0.0.1:{port}"),
            log,
            _data: data,
        }
    }

    /// The log lines written since start-up that contain `text`, waiting up to two seconds for
    /// at least one.
    async fn log_lines_with(&self, text: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let lines: Vec<String> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|line| line.contains(text))
                .cloned()
                .collect();
            if !lines.is_empty() || std::time::Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            / 1024
    }

    /// Creates an LLM config with one key through the admin API.
    async fn llm_config(&self, slug: &str, base: &str) {
        self.create_config(
            &json!({"name": slug, "slug": slug, "config_type": "LLM",
                "target_base_url": base, "api_format": "openai_compatible"}),
            &["sk-up-1"],
        )
        .await;
    }

    /// Creates a config with these keys through the admin API.
    async fn create_config(&self, config: &Value, keys: &[&str]) {
        let client = reqwest::Client::new();
        let url = |path: &str| format!("http://{}/admin{path}", self.address);
        let login: Value = client
            .post(url("/login"))
            .json(&json!({"username": "admin", "password": crate::helpers::ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap();
        let created = client
            .post(url("/proxy-configs"))
            .bearer_auth(token)
            .json(config)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let created: Value = created.json().await.unwrap();
        for key in keys {
            let added = client
                .post(url(&format!("/proxy-configs/{}/keys", created["id"])))
                .bearer_auth(token)
                .json(&json!({ "key_value": key }))
                .send()
                .await
                .unwrap();
            assert_eq!(added.status(), 201);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reproducer of a memory exhaustion: 20 clients without a valid proxy key each send
/// 19 MiB to the built server. A wrong key in the head is refused before the body; a client
/// with no head credential (an OpenAI client may carry its key in the body) is buffered only
/// within `BODY_BUFFER_BUDGET_BYTES`, so the server's peak memory grows by the budget plus
/// connection buffers (measured: 86 MiB with a 64 MiB budget)
/// (the unbounded server grew by about 470 MiB here).
#[tokio::test]
async fn unauthenticated_bodies_hold_no_more_memory_than_the_budget() {
    const CONNECTIONS: usize = 20;
    const BODY: usize = 19 * 1024 * 1024;
    const BUDGET_MIB: u64 = 64;
    let budget = (BUDGET_MIB << 20).to_string();
    let server = ServerProcess::start(&[
        ("MAX_BODY_BYTES", "20971520"),
        ("BODY_BUFFER_BUDGET_BYTES", &budget),
    ]);
    let mock = MockUpstream::start().await;
    server.llm_config("open", &mock.base).await;
    let before = server.peak_rss_mib();
    let chunk = vec![b' '; 256 * 1024];
    let mut clients = Vec::new();
    for n in 0..CONNECTIONS {
        let auth = (n % 2 == 0).then_some("not-a-proxy-key");
        let mut stream = TcpStream::connect(&server.address).await.unwrap();
        let head = head("/llm/open/v1/chat/completions", auth, BODY as u64);
        let chunk = chunk.clone();
        clients.push(tokio::spawn(async move {
            stream.write_all(head.as_bytes()).await.unwrap();
            for _ in 0..BODY / chunk.len() {
                if stream.write_all(&chunk).await.is_err() {
                    break; // refused: the server closed the connection
                }
            }
            read_until_closed(&mut stream, Duration::from_secs(30)).await
        }));
    }
    let mut statuses = Vec::new();
    for client in clients {
        let answer = client.await.unwrap();
        statuses.push(answer.get(9..12).unwrap_or("none").to_owned());
    }
    assert!(
        statuses.iter().all(|s| s == "401" || s == "503"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| *s == "401").count() >= CONNECTIONS / 2,
        "{statuses:?}"
    );
    let grown = server.peak_rss_mib().saturating_sub(before);
    eprintln!("peak RSS grew by {grown} MiB (budget {BUDGET_MIB} MiB): {statuses:?}");
    // Slack over the budget for the allocator's arenas and the per-worker buffers of 20
    // connections (measured 81-109 MiB of growth in all across runs on a loaded 2-core machine;
    // before the budget, the same load grew RSS by ~470 MiB).
    assert!(
        grown <= BUDGET_MIB + 64,
        "peak memory grew by {grown} MiB with a {BUDGET_MIB} MiB budget"
    );
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_a_closed_connection() {
    let app = spawn_app_with(&[("CLIENT_BODY_TIMEOUT", "1")]).await;
    let mock = MockUpstream::start().await;
    llm_config(&app, "slow", &mock.base, "openai_compatible", &["sk-up-1"]).await;
    let mut stream = send_head(
        &app,
        &head("/llm/slow/v1/chat/completions", Some(PROXY_KEY), 100),
        b"{\"model\":",
    )
    .await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn the_buffer_budget_turns_away_bodies_past_it_with_503_and_retry_after() {
    let app = spawn_app_with(&[
        ("MAX_BODY_BYTES", "65536"),
        ("BODY_BUFFER_BUDGET_BYTES", "100000"),
        ("CLIENT_BODY_TIMEOUT", "5"),
    ])
    .await;
    let mock = MockUpstream::start().await;
    llm_config(
        &app,
        "budget",
        &mock.base,
        "openai_compatible",
        &["sk-up-1"],
    )
    .await;
    // The first body holds 60 000 bytes of the budget while it trickles in.
    let _holder = send_head(
        &app,
        &head("/llm/budget/v1/chat/completions", Some(PROXY_KEY), 60_000),
        b"{",
    )
    .await;
    let state = app.state.clone();
    for _ in 0..100 {
        if state.bodies.buffered_bytes() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut second = send_head(
        &app,
        &head("/llm/budget/v1/chat/completions", Some(PROXY_KEY), 60_000),
        b"{",
    )
    .await;
    let answer = read_until_closed(&mut second, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("server_busy"), "{answer}");

    // A small body still fits beside the first one.
    let response = app
        .llm(reqwest::Method::POST, "/llm/budget/v1/chat/completions")
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_proxy_key_sent_as_a_key_parameter_never_reaches_the_upstream() {
    let app = spawn_app_with(&[]).await;
    let mock = MockUpstream::start().await;
    llm_config(&app, "q", &mock.base, "openai_compatible", &["sk-up-1"]).await;
    let response = app
        .llm(
            reqwest::Method::GET,
            &format!("/llm/q/v1/models?key={PROXY_KEY}&limit=2"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = mock.received().pop().unwrap();
    assert!(!received.query.contains(PROXY_KEY), "{}", received.query);
    assert_eq!(received.query, "limit=2");
}

#[tokio::test]
async fn wrong_methods_on_admin_routes_answer_405_with_allow() {
    let app = spawn_app_with(&[]).await;
    let cases = [
        ("TRACE", "/admin/login", "POST"),
        ("GET", "/admin/login", "POST"),
        ("POST", "/admin/app-config", "GET"),
        ("PATCH", "/admin/proxy-configs", "GET, POST"),
        ("TRACE", "/admin/proxy-configs/1", "DELETE, GET, PUT"),
        ("GET", "/admin/proxy-configs/1/status", "PUT"),
        ("PUT", "/admin/proxy-configs/1/keys", "DELETE, GET, POST"),
        ("GET", "/admin/proxy-configs/1/keys/batch", "POST"),
        ("GET", "/admin/keys/1", "DELETE, PATCH"),
        ("GET", "/admin/keys/1/test", "POST"),
        ("TRACE", "/admin/key-counts", "GET"),
    ];
    for (method, path, allow) in cases {
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&app.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        let mut allowed: Vec<String> = response.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        allowed.sort();
        assert_eq!(allowed.join(", "), allow, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "method_not_allowed",
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn admin_answers_are_neither_cached_nor_sniffed() {
    let app = spawn_app_with(&[]).await;
    let login = app.login(crate::helpers::ADMIN_PASSWORD).await;
    let listing = app
        .admin(reqwest::Method::GET, "/proxy-configs")
        .send()
        .await
        .unwrap();
    for response in [login, listing] {
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn bodies_without_their_required_fields_are_bad_requests() {
    let app = spawn_app_with(&[]).await;
    let login = app
        .client
        .post(app.url("/admin/login"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 400);
    let id = app
        .generic_config(
            "batch",
            "GET",
            "https://api.example.com",
            "header",
            "X-Api-Key",
        )
        .await;
    for body in [json!({}), json!([]), json!({"is_active": true})] {
        let response = app
            .admin(
                reqwest::Method::POST,
                &format!("/proxy-configs/{id}/keys/batch"),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_json", "{body}");
    }
}

#[tokio::test]
async fn configs_refuse_line_breaks_in_urls_and_keys_in_managed_headers() {
    let app = spawn_app_with(&[]).await;
    for (body, field) in [
        (
            json!({"name": "crlf", "slug": "crlf", "config_type": "GENERIC", "method": "GET",
                "target_url": "https://api.example.com/v1\r\nX-Injected: 1",
                "api_key_location": "header", "api_key_name": "X-Api-Key"}),
            "target_url",
        ),
        (
            json!({"name": "host", "slug": "host", "config_type": "GENERIC", "method": "GET",
                "target_url": "https://api.example.com/v1",
                "api_key_location": "header", "api_key_name": "Host"}),
            "api_key_name",
        ),
    ] {
        let response = app.create_config(&body).await;
        assert_eq!(response.status(), 422, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["fields"][0]["field"], field, "{error}");
    }
}

/// A config pointed at the gateway itself, with the proxy key as its upstream key: without loop
/// protection one client request opened connections until the process ran out of descriptors.
#[tokio::test]
async fn a_config_pointed_at_the_gateway_itself_is_stopped_with_508() {
    let app = spawn_app_with(&[]).await;
    let response = app
        .create_config(
            &json!({"name": "loop", "slug": "loop", "config_type": "LLM",
            "target_base_url": app.url("/llm/loop"), "api_format": "openai_compatible"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(id, &[PROXY_KEY]).await;
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        app.llm(reqwest::Method::POST, "/llm/loop/v1/chat/completions")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send(),
    )
    .await
    .expect("the loop ends")
    .unwrap();
    assert_eq!(response.status(), 508);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "loop_detected", "{body}");
}

#[tokio::test]
async fn requests_upstream_carry_the_hop_marker_and_other_gateways_pass() {
    let app = spawn_app_with(&[]).await;
    let mock = MockUpstream::start().await;
    llm_config(&app, "via", &mock.base, "openai_compatible", &["sk-up-1"]).await;
    let response = app
        .llm(reqwest::Method::GET, "/llm/via/v1/models")
        .header("via", "1.1 corporate-proxy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let via = mock.received().pop().unwrap().headers["via"].clone();
    assert!(
        via.contains("corporate-proxy") && via.contains("akr-"),
        "{via}"
    );
}

/// A client that gives up stops its exchange: the attempt in flight is dropped and no retry
/// with another key is sent for nobody.
#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_attempt_and_its_retries() {
    use crate::helpers::Behavior;
    let app = spawn_app_with(&[("PROXY_TIMEOUT", "1")]).await;
    let mock = MockUpstream::start().await;
    for key in ["s1", "s2", "s3"] {
        mock.on(key, Behavior::Slow(Duration::from_millis(1500)));
    }
    let id = app
        .generic_config("gone", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["s1", "s2", "s3"]).await;
    let mut stream = send_head(
        &app,
        &format!("GET /proxy/gone/x HTTP/1.1\r\nHost: test\r\nX-Proxy-Key: {PROXY_KEY}\r\n\r\n"),
        b"",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.shutdown().await.unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        mock.received().len(),
        1,
        "no retry was sent after the client left"
    );
}

/// A client that stays is never taken for gone, though its connection turns readable while
/// the exchange runs: the body arrives in chunks, some of them after the upstream was called.
#[tokio::test]
async fn a_client_sending_its_body_during_the_exchange_is_not_taken_for_gone() {
    use crate::helpers::Behavior;
    let app = spawn_app_with(&[("PROXY_TIMEOUT", "5")]).await;
    let mock = MockUpstream::start().await;
    mock.on("stay-key", Behavior::Slow(Duration::from_millis(300)));
    let id = app
        .generic_config("stay", "POST", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["stay-key"]).await;
    let mut stream = send_head(
        &app,
        &format!(
            "POST /proxy/stay/x HTTP/1.1\r\nHost: test\r\nX-Proxy-Key: {PROXY_KEY}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ),
        b"5\r\nfirst\r\n",
    )
    .await;
    for chunk in [&b"6\r\nsecond\r\n"[..], b"5\r\nthird\r\n", b"0\r\n\r\n"] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stream.write_all(chunk).await.unwrap();
    }
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let received = mock.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body_len, "firstsecondthird".len());
}

/// One slow upstream host cannot hold every connection of a worker: past
/// `UPSTREAM_MAX_CONNECTIONS_PER_HOST`, requests to it wait for a connection of their own host,
/// and configs of other hosts are served meanwhile.
#[tokio::test]
async fn upstream_connections_are_bounded_per_host() {
    use crate::helpers::Behavior;
    let app = spawn_app_with(&[
        ("WORKERS", "1"),
        ("UPSTREAM_MAX_CONNECTIONS_PER_HOST", "2"),
        ("PROXY_TIMEOUT", "10"),
    ])
    .await;
    let slow = MockUpstream::start().await;
    slow.on("slow-key", Behavior::Slow(Duration::from_millis(400)));
    let id = app
        .generic_config("slow", "GET", &slow.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["slow-key"]).await;
    let fast = MockUpstream::start().await;
    let id = app
        .generic_config("fast", "GET", &fast.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["fast-key"]).await;

    let slow_requests: Vec<_> = (0..6)
        .map(|_| {
            let request = app.proxy(reqwest::Method::GET, "/proxy/slow/x").send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other_host = app
        .proxy(reqwest::Method::GET, "/proxy/fast/x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        other_host.status(),
        200,
        "another host is served while the slow one is at its bound"
    );
    for request in slow_requests {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(
        slow.slow_peak(),
        2,
        "the slow host never had more than its 2 connections in use"
    );
}

/// Upstreams that echo the key they got (in a JSON message, a URL, a header) must not hand it
/// to the client: every relayed error body and header is masked.
#[tokio::test]
async fn keys_echoed_by_the_upstream_never_reach_the_client() {
    use crate::helpers::Behavior;
    const OPENAI_KEY: &str = "sk-echo/openai-0123456789";
    const GENERIC_KEY: &str = "sk-echo-generic-0123456789";
    let app = spawn_app_with(&[]).await;
    let mock = MockUpstream::start().await;
    mock.on(
        OPENAI_KEY,
        Behavior::Status(
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-echo\/openai-0123456789","code":"invalid_api_key"}}"#,
            vec![],
        ),
    );
    mock.on(
        GENERIC_KEY,
        Behavior::Status(
            400,
            "bad request for https://api.example/v1?apikey=sk-echo-generic-0123456789&x=1",
            vec![("x-echo-key", "sk-echo-generic-0123456789")],
        ),
    );
    let llm = app
        .create_config(
            &json!({"name": "echo", "slug": "echo", "config_type": "LLM",
            "target_base_url": mock.base, "api_format": "openai_compatible"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(llm, &[OPENAI_KEY]).await;
    let generic = app
        .generic_config("echoed", "GET", &mock.base, "query", "apikey")
        .await;
    app.add_keys(generic, &[GENERIC_KEY]).await;

    let openai = app
        .llm(reqwest::Method::POST, "/llm/echo/v1/chat/completions")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 401);
    let text = openai.text().await.unwrap();
    assert!(!text.contains("openai-0123456789"), "{text}");
    assert!(text.contains("****"), "masked, not removed: {text}");
    assert!(
        serde_json::from_str::<Value>(&text).is_ok(),
        "still JSON: {text}"
    );

    let generic = app
        .proxy(reqwest::Method::GET, "/proxy/echoed/thing")
        .send()
        .await
        .unwrap();
    assert_eq!(generic.status(), 400);
    let echoed_header = generic.headers()["x-echo-key"].to_str().unwrap().to_owned();
    assert!(
        !echoed_header.contains("generic-0123456789"),
        "{echoed_header}"
    );
    let text = generic.text().await.unwrap();
    assert!(!text.contains("generic-0123456789"), "{text}");
    assert!(
        text.contains("&x=1"),
        "the rest of the body is kept: {text}"
    );
}

#[tokio::test]
async fn bodies_without_a_key_are_relayed_byte_for_byte() {
    use crate::helpers::Behavior;
    let app = spawn_app_with(&[]).await;
    let mock = MockUpstream::start().await;
    let body =
        r#"{"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}"#;
    mock.on("sk-plain-0123456789", Behavior::Status(400, body, vec![]));
    let id = app
        .generic_config("plain", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["sk-plain-0123456789"]).await;
    let response = app
        .proxy(reqwest::Method::GET, "/proxy/plain/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), body);
}

/// Connections the upstream closed are released by the idle sweep instead of staying in
/// CLOSE-WAIT until the next request to the same host.
#[tokio::test]
async fn connections_closed_by_the_upstream_do_not_linger_in_close_wait() {
    let app = spawn_app_with(&[("UPSTREAM_IDLE_SECONDS", "1")]).await;
    // An upstream that answers keep-alive requests and closes a connection idle for 100 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(Ok(read)) =
                    tokio::time::timeout(Duration::from_millis(100), socket.read(&mut buffer)).await
                {
                    if read == 0 {
                        break;
                    }
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    let id = app
        .generic_config(
            "closing",
            "GET",
            &format!("http://127.0.0.1:{upstream_port}"),
            "header",
            "X-Api-Key",
        )
        .await;
    app.add_keys(id, &["k1"]).await;
    for _ in 0..4 {
        let response = app
            .proxy(reqwest::Method::GET, "/proxy/closing/x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let close_wait = || {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let remote = format!(":{upstream_port:04X} ");
        table
            .lines()
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3
                    && format!("{} ", fields[2]).ends_with(&remote)
                    && fields[3] == "08"
            })
            .count()
    };
    let mut lingering = usize::MAX;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        lingering = close_wait();
        if lingering == 0 {
            break;
        }
    }
    assert_eq!(lingering, 0, "sockets to the upstream still in CLOSE-WAIT");
}

/// With the default `LOG_LEVEL=info`, a failed exchange writes one warn line naming the config,
/// the final status and every attempt's class, with the last key masked; the retry before it is
/// an info line, and no line carries a whole key.
#[tokio::test]
async fn a_failed_exchange_logs_one_warn_line_with_its_attempts_and_a_masked_key() {
    use crate::helpers::Behavior;
    const LIMITED: &str = "sk-logged-limited-0123456789";
    const BROKEN: &str = "sk-logged-broken-0123456789";
    let server = ServerProcess::start(&[]);
    let mock = MockUpstream::start().await;
    mock.on(LIMITED, Behavior::Status(429, "{}", vec![]));
    mock.on(BROKEN, Behavior::Status(503, "{}", vec![]));
    server
        .create_config(
            &json!({"name": "logged", "slug": "logged", "config_type": "GENERIC",
                "method": "GET", "target_url": mock.base, "api_key_location": "header",
                "api_key_name": "X-Api-Key"}),
            &[LIMITED, BROKEN],
        )
        .await;

    let response = reqwest::Client::new()
        .get(format!("http://{}/proxy/logged/thing", server.address))
        .header("X-Proxy-Key", PROXY_KEY)
        .send()
        .await
        .unwrap();
    assert!(matches!(response.status().as_u16(), 429 | 503));
    let attempts = response.headers()["x-akr-attempts"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(mock.received().len(), 2, "both keys were tried");

    let lines = server.log_lines_with("proxied request failed").await;
    assert_eq!(lines.len(), 1, "one line per failed exchange: {lines:#?}");
    let line = &lines[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("config=logged"), "{line}");
    assert!(line.contains(&format!("attempts={attempts}")), "{line}");
    assert!(
        attempts.contains("429") && attempts.contains("503"),
        "{attempts}"
    );
    assert!(
        line.contains(&format!("status={}", response.status().as_u16())),
        "{line}"
    );
    assert!(
        line.contains("key=sk-l****6789"),
        "the key is masked: {line}"
    );
    for line in server.log_lines_with("logged").await {
        assert!(
            !line.contains("limited-0123") && !line.contains("broken-0123"),
            "no log line carries a whole key: {line}"
        );
    }
}

/// The Anthropic and Gemini wire formats: an upstream error that echoes the key (Anthropic's
/// `invalid x-api-key` message, a Gemini URL with `?key=`) reaches the client masked, still in
/// the format's JSON.
#[tokio::test]
async fn keys_echoed_in_anthropic_and_gemini_errors_never_reach_the_client() {
    use crate::helpers::Behavior;
    const ANTHROPIC_KEY: &str = "sk-ant-echo-0123456789abcdef";
    const GEMINI_KEY: &str = "AIza-echo-0123456789abcdef";
    let app = spawn_app_with(&[]).await;
    let mock = MockUpstream::start().await;
    mock.on_path(
        "/v1/messages",
        Behavior::Status(
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key: sk-ant-echo-0123456789abcdef"}}"#,
            vec![],
        ),
    );
    mock.on_path(
        "/v1beta/models/m:generateContent",
        Behavior::Status(
            400,
            r#"{"error":{"code":400,"message":"API key not valid for https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?key=AIza-echo-0123456789abcdef&alt=json","status":"INVALID_ARGUMENT"}}"#,
            vec![],
        ),
    );
    llm_config(
        &app,
        "ant",
        &mock.base,
        "anthropic_native",
        &[ANTHROPIC_KEY],
    )
    .await;
    let gemini = app
        .create_config(&json!({"name": "gem", "slug": "gem", "config_type": "LLM",
            "target_base_url": mock.base, "api_format": "gemini_native",
            "api_key_location": "query", "api_key_name": "key"}))
        .await;
    assert_eq!(gemini.status(), 201);
    let gemini = gemini.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(gemini, &[GEMINI_KEY]).await;

    let anthropic = app
        .client
        .post(app.url("/llm/ant/v1/messages"))
        .header("x-api-key", PROXY_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-test", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic.status(), 401);
    let text = anthropic.text().await.unwrap();
    assert!(!text.contains("echo-0123456789"), "{text}");
    assert!(
        text.contains("invalid x-api-key: sk-a****cdef"),
        "masked, not removed: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "authentication_error", "{text}");

    let gemini = app
        .client
        .post(app.url("/llm/gem/v1beta/models/m:generateContent"))
        .header("x-goog-api-key", PROXY_KEY)
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(gemini.status(), 400);
    let received = mock.received().pop().unwrap();
    assert!(
        received.query.contains(&format!("key={GEMINI_KEY}")),
        "{received:?}"
    );
    let text = gemini.text().await.unwrap();
    assert!(!text.contains("echo-0123456789"), "{text}");
    assert!(
        text.contains("?key=AIza****cdef&alt=json"),
        "masked in place: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{text}");
}
