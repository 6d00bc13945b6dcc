//! Cross-origin access (SPEC §11), with real preflight requests: the proxy routes answer them
//! without a proxy key for the origins in `CORS_ALLOWED_ORIGINS` (any by default, as the
//! original), the admin API stays same-origin unless `CORS_ADMIN_ALLOWED_ORIGINS` lists origins.

use reqwest::{Method, header};
use serde_json::json;

use crate::helpers::{MockUpstream, spawn_app, spawn_app_with};

async fn preflight(app: &crate::helpers::TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

fn allowed_origin(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn proxy_routes_answer_preflights_without_a_key_and_allow_any_origin_by_default() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app().await;
    let config = app
        .create_config(&json!({
            "name": "OpenAI", "slug": "openai", "config_type": "LLM",
            "target_base_url": upstream.base
        }))
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    app.add_keys(config["id"].as_i64().unwrap(), &["sk-1"])
        .await;

    for path in ["/llm/openai/v1/chat/completions", "/proxy/anything/x"] {
        let response = preflight(&app, path, "https://chat.example.com").await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(allowed_origin(&response), Some("*"), "{path}");
        let methods = response.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let headers = response.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(headers.contains("authorization"), "{headers}");
    }
    assert!(
        upstream.received().is_empty(),
        "a preflight never reaches the upstream"
    );

    let response = app
        .llm(Method::GET, "/llm/openai/v1/models")
        .header(header::ORIGIN, "https://chat.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(allowed_origin(&response), Some("*"));
}

#[tokio::test]
async fn the_admin_api_stays_same_origin_by_default() {
    let app = spawn_app().await;
    let response = preflight(&app, "/admin/proxy-configs", "https://evil.example").await;
    assert_eq!(allowed_origin(&response), None);
    let listed = app
        .admin(Method::GET, "/proxy-configs")
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(allowed_origin(&listed), None);
}

#[tokio::test]
async fn configured_origins_are_the_only_ones_allowed() {
    let app = spawn_app_with(&[
        ("CORS_ALLOWED_ORIGINS", "https://chat.example.com"),
        ("CORS_ADMIN_ALLOWED_ORIGINS", "https://console.example.com"),
    ])
    .await;
    let allowed = preflight(
        &app,
        "/llm/openai/v1/chat/completions",
        "https://chat.example.com",
    )
    .await;
    assert!(allowed.status().is_success());
    assert_eq!(allowed_origin(&allowed), Some("https://chat.example.com"));
    let other = preflight(
        &app,
        "/llm/openai/v1/chat/completions",
        "https://evil.example",
    )
    .await;
    assert_eq!(allowed_origin(&other), None);

    let admin = preflight(&app, "/admin/proxy-configs", "https://console.example.com").await;
    assert!(admin.status().is_success());
    assert_eq!(allowed_origin(&admin), Some("https://console.example.com"));
    let admin_other = preflight(&app, "/admin/proxy-configs", "https://chat.example.com").await;
    assert_eq!(allowed_origin(&admin_other), None);
}
