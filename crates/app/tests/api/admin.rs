//! Every admin route: success and each error class of SPEC §2.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_PASSWORD, spawn_app};

fn llm_config(slug: &str) -> Value {
    json!({
        "name": format!("LLM {slug}"), "slug": slug, "config_type": "llm",
        "target_base_url": "https://api.openai.com/v1",
    })
}

async fn error_code(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body,
    )
}

#[tokio::test]
async fn app_config_is_public_and_login_issues_a_bearer_token() {
    let app = spawn_app().await;
    let body: Value = app
        .client
        .get(app.url("/admin/app-config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["proxy_public_base_url"]
            .as_str()
            .unwrap()
            .starts_with("http://localhost")
    );
    let login: Value = app.login(ADMIN_PASSWORD).await.json().await.unwrap();
    assert_eq!(login["token_type"], "bearer");
    assert!(login["expires_in"].as_u64().unwrap() > 0);
    let (status, code, _) = error_code(app.login("wrong").await).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
}

#[tokio::test]
async fn admin_routes_need_a_valid_token() {
    let app = spawn_app().await;
    let missing = app
        .client
        .get(app.url("/admin/proxy-configs"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let forged = app
        .client
        .get(app.url("/admin/proxy-configs"))
        .bearer_auth("a.b.c")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn login_is_rate_limited_per_client_ip() {
    let app = spawn_app().await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(app.login("wrong").await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let limited = app.login(ADMIN_PASSWORD).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn config_crud_round_trip() {
    let app = spawn_app().await;
    let created = app.create_config(&llm_config("OpenAI")).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["slug"], "openai");
    assert_eq!(created["config_type"], "LLM");
    assert_eq!(created["api_format"], "openai_compatible");
    assert_eq!(created["output_format"], "none");
    assert_eq!(created["is_active"], true);
    let id = created["id"].as_i64().unwrap();

    let listed: Vec<Value> = app
        .admin(Method::GET, "/proxy-configs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let read: Value = app
        .admin(Method::GET, &format!("/proxy-configs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["name"], "LLM OpenAI");

    let mut replacement = llm_config("openai-2");
    replacement["api_format"] = json!("ANTHROPIC_NATIVE");
    let replaced = app
        .admin(Method::PUT, &format!("/proxy-configs/{id}"))
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(replaced["slug"], "openai-2");
    assert_eq!(replaced["api_format"], "anthropic_native");

    let off = app
        .admin(Method::PUT, &format!("/proxy-configs/{id}/status"))
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(off.json::<Value>().await.unwrap()["is_active"], false);

    let deleted = app
        .admin(Method::DELETE, &format!("/proxy-configs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .admin(Method::GET, &format!("/proxy-configs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(gone).await.0, 404);
}

#[tokio::test]
async fn admin_errors_have_the_spec_statuses() {
    let app = spawn_app().await;
    assert_eq!(app.create_config(&llm_config("dup")).await.status(), 201);

    let (status, code, body) = error_code(app.create_config(&llm_config("dup")).await).await;
    assert_eq!((status, code.as_str()), (409, "conflict"), "{body}");

    let bad_json = app
        .admin(Method::POST, "/proxy-configs")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(bad_json).await.0, 400);

    let wrong_type = app
        .admin(Method::POST, "/proxy-configs")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(wrong_type).await.0, 415);

    let huge = json!({"name": "x".repeat(70_000)});
    let (status, code, _) = error_code(app.create_config(&huge).await).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));

    let invalid = json!({"name": "", "slug": "-bad", "config_type": "GENERIC", "method": "FETCH",
        "target_url": "nope", "api_key_location": "header", "api_key_name": "X-Key"});
    let (status, code, body) = error_code(app.create_config(&invalid).await).await;
    assert_eq!((status, code.as_str()), (422, "invalid_fields"));
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "slug", "method", "target_url"]);

    for path in [
        "/proxy-configs/999",
        "/proxy-configs/999/keys",
        "/proxy-configs/abc",
    ] {
        let (status, code, _) =
            error_code(app.admin(Method::GET, path).send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    let (status, _, _) = error_code(
        app.admin(Method::PATCH, "/keys/999")
            .json(&json!({"is_active": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) =
        error_code(app.admin(Method::DELETE, "/keys/999").send().await.unwrap()).await;
    assert_eq!(status, 404);
    let missing_flag = app
        .admin(Method::PUT, "/proxy-configs/1/status")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(missing_flag).await.0, 422);
}

#[tokio::test]
async fn key_routes_mask_values_and_count_batches() {
    let app = spawn_app().await;
    let created: Value = app
        .create_config(&llm_config("keys"))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();

    let added = app
        .admin(Method::POST, &format!("/proxy-configs/{id}/keys"))
        .json(&json!({"key_value": "sk-live-abcdefghijklmnopqrstuvwxyz", "is_active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["key_value"], "sk-l****wxyz");
    assert_eq!(added["health"], "ok");
    let key_id = added["id"].as_i64().unwrap();

    let duplicate = app
        .admin(Method::POST, &format!("/proxy-configs/{id}/keys"))
        .json(&json!({"key_value": "sk-live-abcdefghijklmnopqrstuvwxyz"}))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);

    let report = app
        .add_keys(
            id,
            &[
                "sk-live-abcdefghijklmnopqrstuvwxyz",
                "sk-2-aaaaaaaaaaaa",
                "",
                "sk-3-bbbbbbbbbbbb",
                "sk-2-aaaaaaaaaaaa",
                "bad key",
            ],
        )
        .await;
    assert_eq!(report["success_count"], 2);
    assert_eq!(report["skipped_count"], 2);
    assert_eq!(report["failed_count"], 1);
    assert!(
        !report["failed_keys"][0]
            .as_str()
            .unwrap()
            .contains("bad key")
    );

    let keys = app.list_keys(id).await;
    assert_eq!(keys.len(), 3);
    let text = serde_json::to_string(&keys).unwrap();
    assert!(
        !text.contains("abcdefghijklmnop") && !text.contains("aaaaaaaaaaaa"),
        "{text}"
    );

    let disabled: Value = app
        .admin(Method::PATCH, &format!("/keys/{key_id}"))
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(disabled["is_active"], false);
    assert_eq!(
        app.admin(Method::DELETE, &format!("/keys/{key_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    let cleared: Value = app
        .admin(Method::DELETE, &format!("/proxy-configs/{id}/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["deleted_count"], 2);
    assert!(app.list_keys(id).await.is_empty());
}

#[tokio::test]
async fn the_api_admin_alias_of_reverse_proxied_deployments_also_works() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/admin/proxy-configs"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
