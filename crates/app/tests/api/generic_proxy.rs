//! The generic proxy end to end against a mock upstream: injection, filtering, fairness,
//! failover, errors, streaming and large bodies.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Behavior, MockUpstream, PROXY_KEY, spawn_app, spawn_app_with};

#[tokio::test]
async fn header_injection_forwards_path_query_and_filters_headers() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    let id = app
        .generic_config(
            "weather",
            "POST",
            &format!("{}/api/v2/", mock.base),
            "header",
            "X-Api-Key",
        )
        .await;
    app.add_keys(id, &["upstream-key-1"]).await;

    let response = app
        .proxy(
            Method::POST,
            "/proxy/weather/forecast/today?city=Paris&day=1&day=2",
        )
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "private")
        .header("X-Custom", "kept")
        .header("X-Api-Key", "client-tries-its-own")
        .body("{\"q\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = mock.received().pop().unwrap();
    assert_eq!(received.path, "/api/v2/forecast/today");
    assert_eq!(
        received.query, "city=Paris&day=1&day=2",
        "every query value is kept"
    );
    assert_eq!(received.key, "upstream-key-1");
    assert_eq!(received.headers["x-custom"], "kept");
    assert_eq!(received.body_len, 7);
    for dropped in ["x-proxy-key", "x-hop"] {
        assert!(
            !received.headers.contains_key(dropped),
            "{dropped} must not be forwarded"
        );
    }
}

#[tokio::test]
async fn query_injection_replaces_the_parameter() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    let id = app
        .generic_config("maps", "GET", &mock.base, "query", "apikey")
        .await;
    app.add_keys(id, &["q-key/+="]).await;
    let response = app
        .proxy(Method::GET, "/proxy/maps/geo?apikey=client&x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = mock.received().pop().unwrap();
    assert_eq!(received.key, "q-key/+=");
    assert_eq!(received.query, "x=1&apikey=q-key%2F%2B%3D");
}

#[tokio::test]
async fn three_keys_share_the_load_exactly() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    let id = app
        .generic_config("fair", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["k1", "k2", "k3"]).await;
    for _ in 0..300 {
        let response = app
            .proxy(Method::GET, "/proxy/fair/x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let used = mock.keys_used();
    assert_eq!((used["k1"], used["k2"], used["k3"]), (100, 100, 100));
}

#[tokio::test]
async fn proxy_key_method_and_config_state_are_enforced() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    let id = app
        .generic_config("strict", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["k1"]).await;
    let status = |r: reqwest::Response| r.status().as_u16();

    assert_eq!(
        status(
            app.client
                .get(app.url("/proxy/strict/x"))
                .send()
                .await
                .unwrap()
        ),
        401
    );
    let wrong = app
        .client
        .get(app.url("/proxy/strict/x"))
        .header("X-Proxy-Key", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(status(wrong), 401);
    let other_key = app
        .client
        .get(app.url("/proxy/strict/x"))
        .header("X-Proxy-Key", "other-key")
        .send()
        .await
        .unwrap();
    assert_eq!(status(other_key), 200, "any configured proxy key works");
    assert_eq!(
        status(
            app.proxy(Method::POST, "/proxy/strict/x")
                .send()
                .await
                .unwrap()
        ),
        405
    );
    assert_eq!(
        status(
            app.proxy(Method::GET, "/proxy/unknown/x")
                .send()
                .await
                .unwrap()
        ),
        404
    );
    assert_eq!(
        status(
            app.proxy(Method::GET, "/proxy/Not%20A%20Slug/x")
                .send()
                .await
                .unwrap()
        ),
        404
    );

    app.admin(Method::PUT, &format!("/proxy-configs/{id}/status"))
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status(
            app.proxy(Method::GET, "/proxy/strict/x")
                .send()
                .await
                .unwrap()
        ),
        404,
        "inactive → 404 on the very next request"
    );

    let llm = app
        .create_config(&json!({"name": "llm", "slug": "llm", "config_type": "LLM", "target_base_url": mock.base}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    app.add_keys(llm["id"].as_i64().unwrap(), &["k"]).await;
    assert_eq!(
        status(app.proxy(Method::GET, "/proxy/llm/x").send().await.unwrap()),
        404
    );
}

#[tokio::test]
async fn no_keys_or_all_disabled_answers_503_no_usable_key() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    app.generic_config("empty", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    let response = app
        .proxy(Method::GET, "/proxy/empty/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_usable_key");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_a_slow_one_a_504() {
    let app = spawn_app().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = app
        .generic_config(
            "down",
            "GET",
            &format!("http://127.0.0.1:{closed}"),
            "query",
            "key",
        )
        .await;
    app.add_keys(id, &["AIzaSecretKeyValue123"]).await;
    let response = app
        .proxy(Method::GET, "/proxy/down/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let text = response.text().await.unwrap();
    assert!(!text.contains("AIzaSecretKeyValue123"), "{text}");

    let mock = MockUpstream::start().await;
    mock.on("slow", Behavior::Slow(Duration::from_secs(4)));
    let id = app
        .generic_config("slow", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["slow"]).await;
    let response = app
        .proxy(Method::GET, "/proxy/slow/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn a_rate_limited_key_is_skipped_while_it_cools_down() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "k2",
        Behavior::Status(
            429,
            r#"{"error":"slow down"}"#,
            vec![("retry-after", "120")],
        ),
    );
    let id = app
        .generic_config("limited", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["k1", "k2", "k3"]).await;
    for _ in 0..30 {
        let response = app
            .proxy(Method::GET, "/proxy/limited/x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the client never sees the 429");
    }
    assert_eq!(
        mock.keys_used()["k2"],
        1,
        "the cooling key is tried once, then skipped"
    );
    let keys = app.list_keys(id).await;
    let k2 = &keys[1];
    assert_eq!(k2["health"], "cooling");
    assert!(k2["cooldown_until"].is_string());
}

#[tokio::test]
async fn a_rejected_key_is_failed_and_leaves_rotation() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "revoked",
        Behavior::Status(401, r#"{"error":"invalid api key"}"#, vec![]),
    );
    let id = app
        .generic_config("revoked", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["revoked", "fine"]).await;
    for _ in 0..10 {
        assert_eq!(
            app.proxy(Method::GET, "/proxy/revoked/x")
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(mock.keys_used()["revoked"], 1);
    let keys = app.list_keys(id).await;
    assert_eq!(keys[0]["health"], "failed");
    assert_eq!(keys[1]["health"], "ok");

    // Re-enabling the key is the admin's way back into rotation.
    let key_id = keys[0]["id"].as_i64().unwrap();
    app.admin(Method::PATCH, &format!("/keys/{key_id}"))
        .json(&json!({"is_active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(app.list_keys(id).await[0]["health"], "ok");
}

#[tokio::test]
async fn when_every_key_fails_the_client_gets_the_last_upstream_answer() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    for key in ["a", "b", "c"] {
        mock.on(
            key,
            Behavior::Status(
                503,
                r#"{"error":"overloaded"}"#,
                vec![("x-upstream", "yes")],
            ),
        );
    }
    let id = app
        .generic_config("sick", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["a", "b", "c"]).await;
    let response = app
        .proxy(Method::GET, "/proxy/sick/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(response.text().await.unwrap(), r#"{"error":"overloaded"}"#);
    assert_eq!(
        mock.received().len(),
        3,
        "first attempt plus PROXY_MAX_RETRIES=2"
    );
    let health: Vec<Value> = app
        .list_keys(id)
        .await
        .into_iter()
        .map(|k| k["health"].clone())
        .collect();
    assert_eq!(
        health,
        [json!("ok"), json!("ok"), json!("ok")],
        "5xx is the upstream's fault, not the key's"
    );
}

#[tokio::test]
async fn other_client_errors_are_returned_without_retry() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "a",
        Behavior::Status(404, r#"{"error":"no such item"}"#, vec![]),
    );
    let id = app
        .generic_config("notfound", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["a", "b"]).await;
    let response = app
        .proxy(Method::GET, "/proxy/notfound/x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(mock.received().len(), 1);
}

#[tokio::test]
async fn upstream_redirects_reach_the_client_and_are_never_followed() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    // Following it would resend the upstream key to wherever the upstream points.
    mock.on(
        "a",
        Behavior::Status(302, "", vec![("location", "/elsewhere")]),
    );
    let id = app
        .generic_config("moved", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["a"]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(app.url("/proxy/moved/x"))
        .header("X-Proxy-Key", PROXY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/elsewhere");
    let paths: Vec<String> = mock.received().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/x"],
        "the proxy must not follow the redirect itself"
    );
}

#[tokio::test]
async fn event_streams_arrive_chunk_by_chunk() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on(
        "sse",
        Behavior::Events {
            count: 4,
            gap: Duration::from_millis(400),
        },
    );
    let id = app
        .generic_config("events", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["sse"]).await;
    let started = std::time::Instant::now();
    let response = app
        .proxy(Method::GET, "/proxy/events/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut chunks = response.bytes_stream();
    let first = chunks.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"data: 0\n\n");
    // The upstream needs 1.2 s for the whole stream; the first event must not wait for it.
    assert!(
        first_at < Duration::from_millis(1000),
        "first event after {first_at:?}"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = chunks.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(rest, b"data: 1\n\ndata: 2\n\ndata: 3\n\n");
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn hundred_megabyte_bodies_stream_both_ways_with_flat_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    let app = spawn_app_with(&[("PROXY_TIMEOUT", "30")]).await;
    let mock = MockUpstream::start().await;
    mock.on("big", Behavior::Download(SIZE));
    let id = app
        .generic_config("bulk", "POST", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["big"]).await;
    let before = peak_rss_kib();

    let chunk = bytes::Bytes::from(vec![b'u'; 256 * 1024]);
    let upload = futures_util::stream::iter(
        (0..SIZE / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let response = app
        .client
        .post(app.url("/proxy/bulk/upload"))
        .header("X-Proxy-Key", PROXY_KEY)
        .header("content-length", SIZE.to_string())
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut downloaded = 0usize;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        downloaded += chunk.unwrap().len();
    }
    assert_eq!(downloaded, SIZE);
    assert_eq!(
        mock.received().pop().unwrap().body_len,
        SIZE,
        "the upload arrived whole"
    );
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 64,
        "peak memory grew by {grown_mib} MiB while moving 200 MiB"
    );
}
