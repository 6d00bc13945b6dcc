//! `/health`, `/ready`, `/metrics` and unknown routes.

use serde_json::Value;

use crate::helpers::{Behavior, MockUpstream, spawn_app};

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
