//! `/health`, `/ready`, `/metrics` and unknown routes.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use serde_json::Value;

use crate::{
    helpers::{
        Behavior, MockUpstream, TestApp, spawn_app, spawn_app_with, spawn_app_wrapping_store,
    },
    hot_path::CountingStore,
};

#[tokio::test]
async fn health_and_ready_answer() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["database"], "ok");
    assert_eq!(ready["cache"], "ok");
}

#[tokio::test]
async fn metrics_count_requests_retries_and_keys_by_health() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("k-limited", Behavior::Status(429, "{}", vec![]));
    let id = app
        .generic_config("metered", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(id, &["k-limited", "k-good"]).await;
    for _ in 0..3 {
        app.proxy(reqwest::Method::GET, "/proxy/metered/x")
            .send()
            .await
            .unwrap();
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("akr_proxy_requests_total{config=\"metered\",status_class=\"2xx\",outcome=\"success\"} 3"), "{text}");
    assert!(
        text.contains("akr_proxy_retries_total{config=\"metered\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("akr_upstream_latency_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("akr_keys{config=\"metered\",health=\"cooling\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn metrics_count_keys_per_config_without_reading_the_pools() {
    let key_rows = Arc::new(AtomicUsize::new(0));
    let counter = key_rows.clone();
    let app = spawn_app_wrapping_store(&[], |inner| {
        Arc::new(CountingStore {
            inner,
            snapshot_loads: Arc::default(),
            key_rows: counter,
        })
    })
    .await;
    let big = app
        .generic_config(
            "big-pool",
            "GET",
            "https://api.example.com",
            "header",
            "X-Key",
        )
        .await;
    let keys: Vec<String> = (0..5_000).map(|i| format!("sk-big-{i:06}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    // In batches that fit the tests' MAX_BODY_BYTES.
    for batch in keys.chunks(2_000) {
        assert_eq!(app.add_keys(big, batch).await["success_count"], batch.len());
    }
    let small = app
        .generic_config(
            "small-pool",
            "GET",
            "https://api.example.com",
            "header",
            "X-Key",
        )
        .await;
    app.add_keys(small, &["sk-small-1", "sk-small-2"]).await;
    let first = app.list_keys_page(big, "limit=1").await.1["items"][0]["id"]
        .as_i64()
        .unwrap();
    app.admin(reqwest::Method::PATCH, &format!("/keys/{first}"))
        .json(&serde_json::json!({"is_active": false}))
        .send()
        .await
        .unwrap();

    key_rows.store(0, Ordering::SeqCst);
    let text = scrape(&app, None).await.text().await.unwrap();
    assert_eq!(
        key_rows.load(Ordering::SeqCst),
        0,
        "a scrape reads no key rows"
    );
    for line in [
        "akr_keys{config=\"big-pool\",health=\"ok\"} 4999",
        "akr_keys{config=\"big-pool\",health=\"disabled\"} 1",
        "akr_keys{config=\"big-pool\",health=\"failed\"} 0",
        "akr_keys{config=\"small-pool\",health=\"ok\"} 2",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    let big_series = text.lines().filter(|l| l.contains("big-pool")).count();
    assert_eq!(
        big_series, 4,
        "four health series per config, none per key: {text}"
    );
    assert!(!text.contains("key_id"), "no per-key label: {text}");
}

#[tokio::test]
async fn metrics_require_the_metrics_token_when_it_is_set() {
    let app = spawn_app_with(&[("METRICS_TOKEN", "scrape-secret-123")]).await;
    for token in [
        None,
        Some("wrong-secret"),
        Some(""),
        Some("scrape-secret-1234"),
    ] {
        let response = scrape(&app, token).await;
        assert_eq!(response.status(), 401, "{token:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("METRICS_TOKEN")
        );
    }
    let response = scrape(&app, Some("scrape-secret-123")).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("# EOF"));

    let open = spawn_app().await;
    assert_eq!(
        scrape(&open, None).await.status(),
        200,
        "open without a token"
    );
}

async fn scrape(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(app.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// `METRICS_PER_KEY_LIMIT=N` adds requests, failures and health series for the first N keys
/// (by id) of every config, labelled by key id (never the value); a scrape reads at most one
/// page of N keys per config, whatever the pools hold.
#[tokio::test]
async fn per_key_series_are_an_opt_in_bounded_per_config() {
    let key_rows = Arc::new(AtomicUsize::new(0));
    let counter = key_rows.clone();
    let app = spawn_app_wrapping_store(&[("METRICS_PER_KEY_LIMIT", "2")], |inner| {
        Arc::new(CountingStore {
            inner,
            snapshot_loads: Arc::default(),
            key_rows: counter,
        })
    })
    .await;
    let mock = MockUpstream::start().await;
    mock.on("sk-per-key-limited", Behavior::Status(429, "{}", vec![]));
    let id = app
        .generic_config("per-key", "GET", &mock.base, "header", "X-Api-Key")
        .await;
    app.add_keys(
        id,
        &[
            "sk-per-key-limited",
            "sk-per-key-good",
            "sk-per-key-3",
            "sk-per-key-4",
            "sk-per-key-5",
        ],
    )
    .await;
    let ids: Vec<i64> = app
        .list_keys(id)
        .await
        .iter()
        .map(|k| k["id"].as_i64().unwrap())
        .collect();
    app.admin(reqwest::Method::PATCH, &format!("/keys/{}", ids[1]))
        .json(&serde_json::json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    // Requests until the rate-limited key (the first by id) has been tried once.
    for _ in 0..4 {
        app.proxy(reqwest::Method::GET, "/proxy/per-key/x")
            .send()
            .await
            .unwrap();
    }
    let (first, second) = (ids[0], ids[1]);
    let expected = [
        format!("akr_key_health{{config=\"per-key\",key_id=\"{first}\",health=\"cooling\"}} 1"),
        format!("akr_key_health{{config=\"per-key\",key_id=\"{second}\",health=\"disabled\"}} 1"),
        format!("akr_key_requests_total{{config=\"per-key\",key_id=\"{first}\"}} 1"),
        format!("akr_key_failures_total{{config=\"per-key\",key_id=\"{first}\"}} 1"),
        format!("akr_key_requests_total{{config=\"per-key\",key_id=\"{second}\"}} 0"),
    ];
    // Usage reaches the store within USAGE_FLUSH_SECONDS (1 s in tests).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        key_rows.store(0, Ordering::SeqCst);
        let text = scrape(&app, None).await.text().await.unwrap();
        if expected.iter().all(|line| text.contains(line.as_str()))
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for line in &expected {
        assert!(text.contains(line.as_str()), "{line} in {text}");
    }
    let series = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("key_id="))
            .count()
    };
    assert_eq!(series("akr_key_health{"), 2, "two keys of five: {text}");
    assert_eq!(series("akr_key_requests_total{"), 2, "{text}");
    assert!(
        key_rows.load(Ordering::SeqCst) <= 3,
        "one page of the limit (plus the look-ahead row) per config: {} rows",
        key_rows.load(Ordering::SeqCst)
    );
    assert!(!text.contains("sk-per-key"), "no key value: {text}");
}
