//! Key recovery: the admin test route and the background re-probe of failed keys.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Behavior, MockUpstream, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_test_route_reports_status_latency_and_health() {
    let app = spawn_app().await;
    let mock = MockUpstream::start().await;
    mock.on("bad", Behavior::Status(401, "{}", vec![]));
    let response = app
        .create_config(&json!({"name": "t", "slug": "t", "config_type": "LLM", "target_base_url": format!("{}/v1", mock.base)}))
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(id, &["good", "bad"]).await;
    let keys = app.list_keys(id).await;

    let good: Value = app
        .admin(Method::POST, &format!("/keys/{}/test", keys[0]["id"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(good["status"], 200);
    assert_eq!(good["health"], "ok");
    assert!(good["latency_ms"].is_u64());
    assert_eq!(
        mock.received().pop().unwrap().path,
        "/v1/models",
        "the cheap request is the model list"
    );

    let bad: Value = app
        .admin(Method::POST, &format!("/keys/{}/test", keys[1]["id"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bad["status"], 401);
    assert_eq!(bad["health"], "failed");
    assert_eq!(app.list_keys(id).await[1]["health"], "failed");

    mock.on("bad", Behavior::Ok);
    let fixed: Value = app
        .admin(Method::POST, &format!("/keys/{}/test", keys[1]["id"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        fixed["health"], "ok",
        "a successful test brings the key back"
    );
    let missing = app
        .admin(Method::POST, "/keys/9999/test")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn failed_keys_are_re_probed_in_the_background_and_come_back() {
    let app = spawn_app_with(&[("KEY_RECOVERY_INTERVAL_SECONDS", "1")]).await;
    let mock = MockUpstream::start().await;
    mock.on("flaky", Behavior::Status(403, "{}", vec![]));
    let response = app
        .create_config(
            &json!({"name": "r", "slug": "r", "config_type": "LLM", "target_base_url": mock.base}),
        )
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(id, &["flaky", "steady"]).await;
    for _ in 0..2 {
        let response = app
            .llm(Method::GET, "/llm/r/v1/models")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.list_keys(id).await[0]["health"], "failed");

    mock.on("flaky", Behavior::Ok);
    let mut health = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = app.list_keys(id).await[0]["health"].clone();
        if health == "ok" {
            break;
        }
    }
    assert_eq!(health, "ok", "the background probe brought the key back");
    let probes = mock
        .received()
        .iter()
        .filter(|r| r.key == "flaky" && r.path == "/models")
        .count();
    assert!(probes >= 1);
}

/// The background pass reads the pool a page at a time: failed keys on both sides of a page
/// boundary (1 000 keys) come back, and keys that were not failed are not probed.
#[tokio::test]
async fn failed_keys_past_the_first_page_are_re_probed_too() {
    let app = spawn_app_with(&[("KEY_RECOVERY_INTERVAL_SECONDS", "1")]).await;
    let mock = MockUpstream::start().await;
    let names: Vec<String> = (0..1_200).map(|i| format!("pool-{i:04}")).collect();
    let failing = ["pool-0003", "pool-1150"];
    for name in failing {
        mock.on(name, Behavior::Status(401, "{}", vec![]));
    }
    let response = app
        .create_config(
            &json!({"name": "p", "slug": "p", "config_type": "LLM", "target_base_url": mock.base}),
        )
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_keys(id, &names.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let keys = app.list_keys(id).await;
    assert_eq!(keys.len(), 1_200);
    // Keys are listed by id, in the order they were added; values are masked.
    for (name, index) in failing.into_iter().zip([3, 1_150]) {
        let key = &keys[index];
        let tested: Value = app
            .admin(Method::POST, &format!("/keys/{}/test", key["id"]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tested["health"], "failed", "{name}");
    }

    for name in failing {
        mock.on(name, Behavior::Ok);
    }
    let mut failed = usize::MAX;
    for _ in 0..80 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, page) = app.list_keys_page(id, "health=failed").await;
        assert_eq!(status, 200, "{page}");
        failed = page["items"].as_array().unwrap().len();
        if failed == 0 {
            break;
        }
    }
    assert_eq!(failed, 0, "both failed keys came back");
    let probed: Vec<String> = mock
        .received()
        .iter()
        .filter(|r| r.path == "/models")
        .map(|r| r.key.clone())
        .collect();
    assert!(
        probed.iter().all(|key| failing.contains(&key.as_str())),
        "only failed keys are probed: {probed:?}"
    );
}
